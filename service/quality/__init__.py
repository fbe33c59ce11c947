"""Delayed ground truth: label events, span matching, windowed quality, the join and label-free estimates.

Pure core, like :mod:`service.monitor`: no Kafka, no HTTP, no wall clock, no global state.

- :mod:`service.quality.events`: the ground-truth event contract (pydantic schema + msgspec decoder).
- :mod:`service.quality.spans`: exact span matching as seqeval counts it; classification confusion.
- :mod:`service.quality.window`: sliding window of labelled documents with mergeable TP/FP/FN sums.
- :mod:`service.quality.join`: the bounded join buffer of predictions and labels.
- :mod:`service.quality.estimate`: label-free precision estimate and the calibration gap.
- :mod:`service.quality.significance`: the F1-drop and calibration-gap tests.
- :mod:`service.quality.quality_monitor`: :class:`QualityMonitor`, all of the above for one model.
- :mod:`service.quality.quality_set`: :class:`QualitySet`, the monitors of one stream keyed by model.
"""

from service.quality.estimate import Calibrator, ScoreWindow, calibration_gap, estimated_precision
from service.quality.events import (
    GoldSpan,
    GroundTruth,
    GroundTruthEvent,
    decode_ground_truth,
    decode_ground_truth_lines,
    pydantic_validate_ground_truth,
)
from service.quality.join import JoinBuffer, Label, Matched, Prediction
from service.quality.quality_monitor import QualityConfig, QualityMonitor
from service.quality.quality_set import QualitySet
from service.quality.spans import LabelVocab, confusion_counts, match_batch, match_document
from service.quality.window import QualityWindow

__all__ = [
    "Calibrator",
    "GoldSpan",
    "GroundTruth",
    "GroundTruthEvent",
    "JoinBuffer",
    "Label",
    "LabelVocab",
    "Matched",
    "Prediction",
    "QualityConfig",
    "QualityMonitor",
    "QualitySet",
    "QualityWindow",
    "ScoreWindow",
    "calibration_gap",
    "confusion_counts",
    "decode_ground_truth",
    "decode_ground_truth_lines",
    "estimated_precision",
    "match_batch",
    "match_document",
    "pydantic_validate_ground_truth",
]
