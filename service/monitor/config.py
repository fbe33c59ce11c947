"""Settings of the per-model monitor: windows, reference, calibration. Validated, frozen, documented."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
        description="Window sizes (events) of embedding_outliers; judged every 5 events when multiples of 5.",
    )
    outlier_level: float = Field(
        0.005, gt=0, lt=0.5,
        description="embedding_outliers marks an event beyond this upper quantile of the reference's "
                    "out-of-sample scores (0.005: the 99.5th percentile).",
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
    duplicate_window_events: int = Field(
        1000, ge=0, le=1_000_000,
        description="An event whose event_id is among the last N distinct ids of its model version and split "
        "is a duplicate: counted once (nlpmon_duplicate_events_total), kept in snapshots; 0: no check.",
    )
    confidence_sample: int = Field(
        2000, ge=0, le=100000, description="Recent scored predictions kept for per-label confidence quantiles."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MonitorConfig:
        if self.min_reference_events > min(self.auto_baseline_events, self.reference_reservoir):
            raise ValueError(
                f"min_reference_events ({self.min_reference_events}) must not exceed auto_baseline_events "
                f"({self.auto_baseline_events}) or reference_reservoir ({self.reference_reservoir}), "
                "or a model could never be calibrated")
        from service.monitor.signals import SIGNAL_NAMES  # here: signals imports the drift package

        unknown = sorted(set(self.disabled_signals) - set(SIGNAL_NAMES))
        if unknown:
            raise ValueError(f"disabled_signals: unknown signal(s) {unknown}; known: {', '.join(SIGNAL_NAMES)}")
        return self
