"""Every Prometheus metric of nlpmon, declared once (``METRICS``) with its help text, and the catalogue
that docs/metrics.md, the dashboards and the alert rules are checked against.

The object that registers them and keeps them current is ``nlpmon.observability.exporter.NlpmonMetrics``
(it registers them on the ``CollectorRegistry`` it is given, never the global one), fed three ways, each
called once per batch or per report refresh, never per event:

- ``observe_batch``: batch duration, event ages (vectorised histogram), rejected events by reason;
- ``observe_runner``: a ``RunnerMetrics`` copy from the Kafka loop (lag, dead letters, circuit, polls);
- ``observe_reports``: the merged model reports (``{"model/version": ModelMonitor.report()}``) and the
  alarms raised since the previous call. A report's optional ``"quality"`` block (delayed ground truth)
  feeds the ``nlpmon_quality*`` and ``nlpmon_join*`` metrics (``quality_series`` says which samples).

Scores are on the core's normalised scale: ``nlpmon_drift_score`` is the largest statistic/threshold
ratio over a signal's windows, so the threshold is 1.0 for every signal and ``score > 1`` means drift.

Cardinality: at most ``max_models`` (model, version) pairs get their own series (first seen, first
served; a retired model frees its slot); the others are aggregated under ``model="other",
model_version="other"``. Per model, at most ``max_labels`` labels get their own series; the rest are
aggregated under ``label="other"``. A model whose event counts have not moved for ``retire_after_s``
(injected clock) loses every per-model series. Gauges of a model absent from the latest reports are
removed at once (another group member owns it now); its counters stay until it retires.

Not thread-safe for writers: call the ``observe_*`` methods from one thread (the consumer loop).
Scrapes (``generate_latest``) may run concurrently from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MetricType = Literal["counter", "gauge", "histogram"]
OTHER = "other"  # label value of aggregated overflow models and labels
ALL_LABELS = "__all__"  # label value of quantiles over every label
LABEL_SOURCES = ("entity_label", "token_tag", "prediction_label")
CONFIDENCE_SOURCES = ("confidence", "prediction_confidence")
STATUSES = ("monitoring", "reference_pending", "collecting_baseline")  # ModelMonitor.status values
MODEL_LABELS = ("model", "model_version")
RISING_LABELS = 5  # labels per per-label signal in nlpmon_drift_label_score

BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EVENT_AGE_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                     21600.0, 86400.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its exposed name (counters end in ``_total``), type, label names and help."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()

    @property
    def per_model(self) -> bool:
        return self.labels[:2] == MODEL_LABELS


def _m(name: str, type_: MetricType, labels: tuple[str, ...], help_: str,
       buckets: tuple[float, ...] = ()) -> MetricSpec:
    return MetricSpec(name, type_, labels, help_, buckets)


_SIG = (*MODEL_LABELS, "signal")
_FIG = (*MODEL_LABELS, "label", "metric")

#: The one declaration of every metric; ``metric_catalogue``, docs/metrics.md and the tests read it.
METRICS: tuple[MetricSpec, ...] = (
    # -- process --------------------------------------------------------------------------------------
    _m("nlpmon_build_info", "gauge", ("version",), "Always 1; the nlpmon version that serves these metrics."),
    _m("nlpmon_tracked_models", "gauge", ("series",),
       "Models currently exported: series=own (their own series, at most max_models) or series=other "
       "(aggregated under model=\"other\")."),
    # -- events ---------------------------------------------------------------------------------------
    _m("nlpmon_events_total", "counter", (*MODEL_LABELS, "split"),
       "Valid events folded into the model's monitor, by split (production|reference)."),
    _m("nlpmon_duplicate_events_total", "counter", MODEL_LABELS,
       "Valid events dropped because their event_id was among the last duplicate_window_events ids of "
       "the model version (a producer's retry): each event is monitored once."),
    _m("nlpmon_invalid_events_total", "counter", ("reason",),
       "Events (predictions and ground-truth labels) rejected by validation, by reason code (see "
       "docs/events.md); they go to the dead-letter topic."),
    _m("nlpmon_unkeyed_events_total", "counter", ("topic",),
       "Valid events (predictions or ground-truth labels) that arrived without a Kafka key, by topic; key every "
       "message by its model name (docs/events.md)."),
    _m("nlpmon_batch_seconds", "histogram", (),
       "Wall time to decode, validate and monitor one consumed batch.", BATCH_SECONDS_BUCKETS),
    _m("nlpmon_event_age_seconds", "histogram", (),
       "Processing time minus event time (the event's timestamp), per event; negative ages count as 0; a "
       "skewed event time counts clamped (at most max_event_age_seconds).",
       EVENT_AGE_BUCKETS),
    _m("nlpmon_last_event_timestamp_seconds", "gauge", MODEL_LABELS,
       "Event time (epoch seconds) of the newest monitored event of the model; a skewed event time counts "
       "clamped (at most max_clock_skew_seconds after the processing time)."),
    _m("nlpmon_clock_skew_events_total", "counter", (*MODEL_LABELS, "direction"),
       "Events whose timestamp lies more than max_clock_skew_seconds after (direction=future) or "
       "max_event_age_seconds before (direction=past) the processing time; monitored with their time "
       "unknown to windows, or dead-lettered (reason clock_skew) with reject_clock_skew."),
    # -- drift ----------------------------------------------------------------------------------------
    _m("nlpmon_drift_score", "gauge", _SIG,
       "Latest largest statistic/threshold ratio over the signal's windows; 1 = calibrated threshold, "
       "above 1 = drift."),
    _m("nlpmon_drift_threshold", "gauge", _SIG,
       "Alarm threshold on the normalised score scale: always 1.0 (each window's raw threshold is "
       "calibrated to the false-alarm rate)."),
    _m("nlpmon_drift_detected", "gauge", _SIG,
       "1 while the signal's drift flag is raised (score above 1, cleared after a quiet stretch), else 0."),
    _m("nlpmon_drift_alarms_total", "counter", _SIG,
       "Drift alarms (no-drift to drift transitions) raised for the signal."),
    _m("nlpmon_drift_label_score", "gauge", (*MODEL_LABELS, "signal", "label"),
       "Per-label signals (entity_label_share, token_tag_share): the score of each of the (at most 5) labels "
       "whose share rose most above the reference's, on the signal's scale (1 = threshold); the "
       "NlpmonDriftDetected alert names the top one."),
    _m("nlpmon_label_share", "gauge", (*MODEL_LABELS, "source", "label", "window"),
       "Share of a label in the reference or the current (longest full) window, for every label of the "
       "reference vocabulary; source = entity_label|token_tag|prediction_label, window = reference|current."),
    _m("nlpmon_confidence_quantile", "gauge", (*MODEL_LABELS, "source", "label", "quantile", "window"),
       "Confidence quantile in the reference or the current (longest full) window; source = "
       "confidence|prediction_confidence; label=\"__all__\" (per-label quantiles are not computed yet)."),
    _m("nlpmon_label_confidence_mean", "gauge", (*MODEL_LABELS, "label"),
       "Mean entity confidence per predicted label over the longest distribution window."),
    _m("nlpmon_window_events", "gauge", MODEL_LABELS,
       "Events in the longest full window of the model (the window label shares and quantiles describe)."),
    _m("nlpmon_reference_events", "gauge", MODEL_LABELS,
       "Events in the model's reference (collected so far, while it is not calibrated yet)."),
    _m("nlpmon_model_status", "gauge", (*MODEL_LABELS, "status"),
       "1 for the model's current status (monitoring|reference_pending|collecting_baseline), 0 for the "
       "others; for model=\"other\", the number of aggregated models in that status."),
    # -- quality from delayed ground truth (reports with a "quality" block; docs/metrics.md) ----------
    _m("nlpmon_quality", "gauge", _FIG,
       "Quality over the sliding window of labelled production documents: metric = precision|recall|f1|"
       "support per label, label=\"__micro__\" (precision|recall|f1|support), \"__macro__\" (f1), "
       "\"__all__\" (accuracy, text classification); undefined figures have no series."),
    _m("nlpmon_quality_reference", "gauge", _FIG,
       "The same figures for the baseline the F1 drop is tested against (labelled reference events, or the "
       "first full labelled production window); no series before there is one."),
    _m("nlpmon_quality_documents", "gauge", MODEL_LABELS,
       "Labelled production documents in the model version's quality window."),
    _m("nlpmon_quality_f1_drop_score", "gauge", MODEL_LABELS,
       "z statistic of reference micro-F1 minus current micro-F1 (no series until both have enough documents)."),
    _m("nlpmon_quality_f1_drop_threshold", "gauge", MODEL_LABELS,
       "Threshold of the F1-drop z statistic, calibrated from the false-alarm rate."),
    _m("nlpmon_quality_drift", "gauge", (*MODEL_LABELS, "signal"),
       "1 while the quality test flags, else 0; signal = f1_drop|calibration_gap."),
    _m("nlpmon_quality_partial", "gauge", (*MODEL_LABELS, "scheme", "label", "metric"),
       "Partial-match quality over the labelled window (token classification, counted as nervaluate counts "
       "it): scheme = strict|exact|partial|ent_type; metric = precision|recall|f1 per label and for "
       "label=\"__overall__\" (every label at once), which also has correct|incorrect|partial|missed|spurious."),
    _m("nlpmon_quality_partial_reference", "gauge", (*MODEL_LABELS, "scheme", "metric"),
       "The overall precision|recall|f1 of each partial-match scheme on the F1 baseline; no series before "
       "there is one."),
    _m("nlpmon_quality_partial_f1_drop_score", "gauge", (*MODEL_LABELS, "scheme"),
       "z statistic of the scheme's baseline F1 minus its current F1 (overall; no series until both have "
       "enough documents); its threshold is nlpmon_quality_f1_drop_threshold."),
    _m("nlpmon_quality_partial_drift", "gauge", (*MODEL_LABELS, "scheme"),
       "1 while the scheme's F1-drop test flags, else 0; scheme = strict|exact|partial|ent_type."),
    _m("nlpmon_quality_estimated_precision", "gauge", (*MODEL_LABELS, "label"),
       "Label-free precision estimate per predicted label from the (calibrated) confidences of recent "
       "production predictions, labelled or not."),
    _m("nlpmon_quality_calibration_gap", "gauge", (*MODEL_LABELS, "label"),
       "Realised minus estimated precision over the labelled window, per label; label=\"__all__\" over "
       "every label (negative: the model is over-confident)."),
    _m("nlpmon_quality_calibration_gap_score", "gauge", MODEL_LABELS,
       "|z| of the overall calibration gap (no series until the estimate is calibrated and enough spans are "
       "labelled)."),
    _m("nlpmon_quality_calibration_gap_threshold", "gauge", MODEL_LABELS,
       "Threshold of the calibration-gap |z|, calibrated from the false-alarm rate."),
    _m("nlpmon_quality_calibrated", "gauge", MODEL_LABELS,
       "1 when the precision estimate is calibrated on labelled reference predictions, 0 while it uses the "
       "raw confidences."),
    _m("nlpmon_quality_labelled_fraction", "gauge", MODEL_LABELS,
       "Of the model's predictions whose fate is known, the share that got a label: matched / (matched + "
       "expired unlabelled + evicted); the model's figure, on each of its versions."),
    _m("nlpmon_quality_label_delay_seconds", "histogram", MODEL_LABELS,
       "Label time minus prediction time of the joined production predictions, counted by this process "
       "since it took the model over; buckets = the quality config's delay_buckets."),
    _m("nlpmon_join_events_total", "counter", (*MODEL_LABELS, "kind"),
       "Events entering the model's prediction/label join, kind = predictions|labels, counted by this "
       "process; the model's figure, on each of its versions."),
    _m("nlpmon_join_total", "counter", (*MODEL_LABELS, "outcome"),
       "Where the join's inputs ended, by outcome (matched, prediction_expired_unlabelled, "
       "label_expired_unmatched, ...; docs/metrics.md), counted by this process; the model's figure, on "
       "each of its versions."),
    _m("nlpmon_join_pending", "gauge", (*MODEL_LABELS, "kind"),
       "Predictions waiting for their label and labels waiting for their prediction (kind = "
       "predictions|labels) in the model's join buffer."),
    _m("nlpmon_join_buffer_bytes", "gauge", MODEL_LABELS,
       "Estimated memory of the model's join buffer (bounded by the quality config's max_join_bytes)."),
    # -- consumer loop --------------------------------------------------------------------------------
    _m("nlpmon_consumer_lag", "gauge", ("topic", "partition"),
       "Messages between the partition's high watermark and the next offset to process."),
    _m("nlpmon_assigned_partitions", "gauge", (), "Partitions assigned to this group member."),
    _m("nlpmon_batches_total", "counter", (), "Consumed batches processed by the consumer loop."),
    _m("nlpmon_dead_letters_total", "counter", (),
       "Invalid events produced to the dead-letter topic (acknowledged before the next checkpoint commits)."),
    _m("nlpmon_commit_failures_total", "counter", (), "Offset commits that failed (retried at the next checkpoint)."),
    _m("nlpmon_rebalances_total", "counter", (), "Consumer-group rebalances seen by this member."),
    _m("nlpmon_circuit_open", "gauge", (),
       "1 while the invalid-event circuit breaker is open or half-open (consumption paused or on trial)."),
    _m("nlpmon_circuit_trips_total", "counter", (), "Times the invalid-event circuit breaker opened."),
    _m("nlpmon_group_member", "gauge", (),
       "1 while this process is a member of its consumer group (a member id at the last poll), else 0."),
    _m("nlpmon_batches_cut_total", "counter", (),
       "Batches cut short at the loop's budget (kafka.poll_gap_target_s, max_batch_s) or by a stop; their rest was "
       "fetched again (nothing skipped)."),
    _m("nlpmon_checkpoint_waiting", "gauge", (),
       "1 while a checkpoint waits for the broker to acknowledge its dead letters or snapshots past its "
       "timeout (consumption paused, deliveries retried), else 0 (also while one is in flight within it)."),
    _m("nlpmon_held_event_bytes", "gauge", (),
       "Memory held for models whose reference is calibrating (each queued sample, and the events held "
       "until its profile is applied, packed), summed over this process's partitions; consumption pauses when "
       "it reaches max_held_mb."),
    _m("nlpmon_held_paused", "gauge", (),
       "1 while consumption is paused because the events held for calibrations reached max_held_mb, else 0."),
    _m("nlpmon_held_pauses_total", "counter", (),
       "Times consumption paused because the events held for calibrations reached max_held_mb."),
    _m("nlpmon_checkpoint_stalls_total", "counter", (),
       "Checkpoints that had to pause consumption to wait for the broker (an outage or a slow broker)."),
    _m("nlpmon_kafka_client_errors_total", "counter", (),
       "Errors reported by the Kafka clients (connection refused, timeouts...); logged once per outage, "
       "counted here."),
    _m("nlpmon_state_losses_total", "counter", (),
       "Partitions found without the state or committed offsets this process had written (a broker that "
       "came back empty, or topics recreated); see the WARNING and /readyz notes."),
    _m("nlpmon_checkpoints_total", "counter", (),
       "Checkpoints whose dead letters and snapshots the broker acknowledged (the offset commit follows; its "
       "failures count in nlpmon_commit_failures_total)."),
    _m("nlpmon_checkpoints_skipped_total", "counter", (),
       "Checkpoints (or their commit) skipped because this member had left its group (its partitions are lost)."),
    _m("nlpmon_snapshots_written_total", "counter", (),
       "Partition snapshots the broker acknowledged in completed checkpoints."),
    _m("nlpmon_snapshots_produced_total", "counter", (),
       "Partition snapshots handed to the producer (acknowledged or not yet), each in one or more chunks."),
    _m("nlpmon_snapshot_chunks_produced_total", "counter", (), "Chunks of those snapshots handed to the producer."),
    _m("nlpmon_snapshot_parts_produced_total", "counter", (),
       "Parts of snapshots (a model's state, a reference profile) handed to the producer; a part that did not "
       "change since the partition's last snapshot is not written again."),
    _m("nlpmon_snapshot_bytes_produced_total", "counter", (),
       "Bytes of snapshot chunks (bodies and parts) handed to the producer."),
    _m("nlpmon_snapshot_tombstone_failures_total", "counter", (),
       "Tombstones of superseded snapshot chunks that could not be produced or delivered (the chunks stay in "
       "the state topic as garbage, retried after the next snapshot; never fatal)."),
    _m("nlpmon_lost_assignments_total", "counter", (),
       "Assignments lost (session timeout or max.poll.interval.ms): their partitions dropped without a commit."),
    _m("nlpmon_offset_gaps_total", "counter", (),
       "Jumps over offsets the broker no longer has (compaction, transaction markers or retention), "
       "each logged as a WARNING."),
    _m("nlpmon_kafka_statistics_undecodable_total", "counter", (),
       "librdkafka statistics reports that could not be read (the consumer lag is not updated from them); "
       "the first is logged."),
    _m("nlpmon_last_poll_age_seconds", "gauge", (),
       "Seconds since the consumer loop last polled Kafka (since start-up before the first poll); "
       "computed at scrape time."),
    _m("nlpmon_longest_poll_gap_seconds", "gauge", (),
       "Longest time the consumer loop spent between two polls of Kafka since start-up (processing a batch, "
       "checkpointing, applying finished calibrations); near max.poll.interval.ms the group drops the member."),
    # -- several processes (nlpmon run --processes N; service/app/members.py) -----------------------
    _m("nlpmon_member_restarts_total", "counter", ("member",),
       "Times the parent of nlpmon run --processes N restarted a member process that had exited; only the "
       "parent exports series (member = 0..N-1)."),
)
SPECS: dict[str, MetricSpec] = {s.name: s for s in METRICS}


def metric_catalogue() -> list[dict[str, Any]]:
    """Every exported metric as ``{"name", "type", "labels", "help"}``, in declaration order.

    Histograms are listed under their base name (Prometheus adds ``_bucket``, ``_sum``, ``_count``).
    """
    return [{"name": s.name, "type": s.type, "labels": list(s.labels), "help": s.help} for s in METRICS]


def catalogue_markdown() -> str:
    """The metrics table of docs/metrics.md (the docs test checks that the file contains it)."""
    rows = ["| name | type | labels | meaning |", "|---|---|---|---|"]
    for m in metric_catalogue():
        labels = ", ".join(f"`{x}`" for x in m["labels"]) or "-"
        rows.append(f"| `{m['name']}` | {m['type']} | {labels} | {m['help'].replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"
