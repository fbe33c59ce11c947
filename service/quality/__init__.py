"""Delayed ground truth: label events, span matching, windowed quality, the join and label-free estimates.

Pure core, like :mod:`nlpmon.monitor`: no Kafka, no HTTP, no wall clock, no global state.

- :mod:`nlpmon.quality.events`: the ground-truth event contract (pydantic schema + msgspec decoder).
- :mod:`nlpmon.quality.spans`: exact span matching as seqeval counts it; classification confusion.
- :mod:`nlpmon.quality.window`: sliding window of labelled documents with mergeable TP/FP/FN sums.
- :mod:`nlpmon.quality.join`: the bounded join buffer of predictions and labels.
- :mod:`nlpmon.quality.estimate`: label-free precision estimate and the calibration gap.
- :mod:`nlpmon.quality.significance`: the F1-drop and calibration-gap tests.
- :mod:`nlpmon.quality.quality_monitor`: :class:`QualityMonitor`, all of the above for one model.
- :mod:`nlpmon.quality.quality_set`: :class:`QualitySet`, the monitors of one stream keyed by model.
"""

from .estimate import Calibrator, ScoreWindow, calibration_gap, estimated_precision
from .events import (
    GoldSpan,
    GroundTruth,
    GroundTruthEvent,
    decode_ground_truth,
    decode_ground_truth_lines,
    pydantic_validate_ground_truth,
)
from .join import JoinBuffer, Label, Matched, Prediction
from .quality_monitor import QualityConfig, QualityMonitor
from .quality_set import QualitySet
from .spans import LabelVocab, confusion_counts, match_batch, match_document
from .window import QualityWindow

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
