"""Settings of the per-model monitor: windows, reference, calibration. Validated, frozen, documented."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .examples import cut_text

log = logging.getLogger(__name__)

#: The patterns ``pages.redact`` applies by default: e-mail addresses, phone numbers (7+ characters of
#: digits and separators, + or a digit first, a digit last), and runs of 6 or more digits.
DEFAULT_REDACT_PATTERNS: tuple[str, ...] = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    r"(?<!\w)(?:\+|\(|\d)[\d ().-]{5,}\d(?!\w)",
    r"\d{6,}",
)
#: What replaces each redacted character (one per character, so entity offsets stay right).
REDACTION_MARK = "\u2588"


class TextPolicy(BaseModel):
    """What of an event's text the monitor keeps (for pages, the API and snapshots).

    ``keep=False``: nothing (every kept text is None). Otherwise each regular expression of ``redact`` is
    applied, in order, before the text is kept or cut: every character of a match becomes ``REDACTION_MARK``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep: bool = True
    redact: tuple[str, ...] = ()

    @field_validator("redact")
    @classmethod
    def _compiles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
        return v

    def apply(self, text: str | None, max_chars: int) -> str | None:
        """The text as kept: None when texts are not kept, else redacted then cut to ``max_chars``.

        >>> TextPolicy(redact=(r"[0-9]{3,}",)).apply("call 5551234 now", 100).count(REDACTION_MARK)
        7
        """
        kept = self.restrict(text)
        return None if kept is None else cut_text(kept, max_chars)

    def restrict(self, text: str | None) -> str | None:
        """A text kept earlier (a snapshot, a saved profile) under this policy: None or redacted, not cut
        again. Applying it twice changes nothing more (a redaction mark matches no default pattern)."""
        if text is None or not self.keep:
            return None
        for rx in _compiled(self.redact):
            text = rx.sub(lambda m: REDACTION_MARK * len(m.group(0)), text)
        return text


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


class MonitorConfig(BaseModel):
    """How every per-model monitor is built. All fields have sensible defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    false_alarm_rate: float = Field(
        1e-6, gt=0, lt=0.5,
        description="Target alarms per signal per stationary event, shared by all window sizes of a signal.",
    )
    auto_baseline_events: int = Field(
        2000, ge=200,
        description="Without a reference, the first N production events of a model become its reference.",
    )
    min_reference_events: int = Field(
        200, ge=50, description="A reference smaller than this is refused (too small to calibrate)."
    )
    reference_reservoir: int = Field(
        5000, ge=200, description="At most this many reference events are kept (reservoir sample) per model."
    )
    embedding_windows: tuple[int, ...] = Field(
        (5, 10, 20, 50, 100, 200, 500, 1000), description="Window sizes (events) of the embedding signals."
    )
    distribution_windows: tuple[int, ...] = Field(
        (50, 100, 200, 500, 1000),
        description="Window sizes (events) of the label, tag, confidence, density and length signals.",
    )
    disabled_signals: tuple[str, ...] = Field(
        (), description="Signals not calibrated nor run (names as in docs/drift.md), e.g. to measure their cost.",
    )
    outlier_windows: tuple[int, ...] = Field(
        (20, 50, 100, 200, 500, 1000),
        description="Window sizes (events) of embedding_outliers and embedding_clusters; judged every 5 "
                    "(embedding_clusters: 10) events when all are multiples of that.",
    )
    outlier_level: float = Field(
        0.005, gt=0, lt=0.5,
        description="embedding_outliers marks an event beyond this upper quantile of the reference's "
                    "out-of-sample scores (0.005: the 99.5th percentile).",
    )
    tag_schemes: dict[str, Literal["iob1", "iob2", "bioes", "biluo"]] = Field(
        default_factory=dict,
        description="Tagging scheme of a model's token tags, by model name, for tag_validity; a model not "
                    "listed has its scheme detected from its reference's tags (none found: signal unavailable).",
    )
    cluster_levels: tuple[float, ...] = Field(
        (0.02, 0.05),
        description="Marking levels of embedding_clusters: per level, the events beyond that upper quantile of "
                    "the reference's out-of-sample scores are compared (0.05: the 95th percentile); each level "
                    "has its own thresholds, the false-alarm budget split over levels. A level narrower than the "
                    "widest is judged only when the reference's held-out half expects 20 events beyond it.",
    )
    block_events: int = Field(
        50, ge=5,
        description="Windows up to this size are evaluated at every event; larger ones per block of this many.",
    )
    clear_after_events: int = Field(
        50, ge=1, description="A drift flag clears after this many events with every statistic below threshold.",
    )
    max_window_age_seconds: float | None = Field(
        None, gt=0, description="Events older than this (event time) never form a window with newer ones. "
        "Events with a skewed clock (below) have no event time here: they neither break nor age a window."
    )
    max_clock_skew_seconds: float = Field(
        300.0, gt=0,
        description="An event time later than the processing time plus this is a skewed clock (`clock_skew`).",
    )
    max_event_age_seconds: float = Field(
        7 * 86400.0, gt=0,
        description="An event time earlier than the processing time minus this is a skewed clock "
        "(`clock_skew`); raise it to backfill older events.",
    )
    reject_clock_skew: bool = Field(
        False,
        description="Dead-letter events with a skewed clock (reason `clock_skew`) instead of monitoring them "
        "with their time unknown to windows and history and clamped for the metrics.",
    )
    pca_components: int = Field(32, ge=2, le=256, description="PCA components kept for embeddings.")
    random_features: int = Field(128, ge=16, le=2048, description="Random Fourier features for the MMD.")
    calibration_splits: int = Field(6, ge=2, le=64, description="Random reference splits used to calibrate.")
    calibration_pending_events: int = Field(
        20000, ge=0,
        description="Events of a model held (in memory and snapshots) while its reference calibrates beside the "
        "consumer loop; beyond, the loop waits for that calibration (or runs it, if not started yet).",
    )
    seed: int = Field(0, description="Seed of every random choice (splits, features, reservoirs).")
    max_labels: int = Field(64, ge=2, le=1000, description="Label vocabulary cap per signal (rest: other).")
    display_sample: int = Field(
        300, ge=0, le=5000, description="Reference events kept after calibration for pages and lookups."
    )
    outlier_examples: int = Field(
        10, ge=0, le=100,
        description="Most out-of-reference recent events kept; as many lowest-confidence and smallest-margin ones.",
    )
    history_points: int = Field(
        240, ge=0, le=10000, description="Points of score history kept in memory for the model pages (0: none)."
    )
    history_events_per_point: int = Field(50, ge=1, description="Monitored events per point of score history.")
    projection_points: int = Field(
        200, ge=0, le=5000, description="Recent embeddings kept in memory for the model page's projection."
    )
    max_text_chars: int = Field(
        1000, ge=16, le=1_000_000,
        description="Characters of an event's text kept for the pages, the API and snapshots (reference "
        "sample, examples, projection, outliers); longer texts are cut, the cut marked.",
    )
    texts: TextPolicy = Field(
        TextPolicy(), description="What of event texts is kept (nlpmon run sets it from pages.keep_texts, "
        "pages.redact and pages.redact_patterns).")
    duplicate_window_events: int = Field(
        1000, ge=0, le=1_000_000,
        description="An event whose event_id is among the last N distinct ids of its model version and split "
        "is a duplicate: counted once (nlpmon_duplicate_events_total), kept in snapshots; 0: no check.",
    )
    confidence_sample: int = Field(
        2000, ge=0, le=100000, description="Recent scored predictions kept for per-label confidence quantiles."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """``cluster_level`` (one level, before the ladder) still reads, as a one-level ladder."""
        if isinstance(data, dict) and "cluster_level" in data:
            data = dict(data)
            level = data.pop("cluster_level")
            if "cluster_levels" in data:
                raise ValueError("give cluster_levels only (cluster_level is its former, one-level name)")
            log.warning("monitor.cluster_level is now monitor.cluster_levels (a list): read as [%s]", level)
            data["cluster_levels"] = (level,)
        return data

    @field_validator("cluster_levels")
    @classmethod
    def _levels(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < q < 0.5 for q in v):
            raise ValueError(f"cluster_levels: give one or more levels strictly between 0 and 0.5, got {list(v)}")
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _consistent(self) -> MonitorConfig:
        if self.min_reference_events > min(self.auto_baseline_events, self.reference_reservoir):
            raise ValueError(
                f"min_reference_events ({self.min_reference_events}) must not exceed auto_baseline_events "
                f"({self.auto_baseline_events}) or reference_reservoir ({self.reference_reservoir}), "
                "or a model could never be calibrated")
        from .signals import SIGNAL_NAMES  # here: signals imports the drift package

        unknown = sorted(set(self.disabled_signals) - set(SIGNAL_NAMES))
        if unknown:
            raise ValueError(f"disabled_signals: unknown signal(s) {unknown}; known: {', '.join(SIGNAL_NAMES)}")
        return self
