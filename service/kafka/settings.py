"""Settings of the Kafka shell: where to read, where to write, how often to checkpoint, when to trip.

A plain, frozen pydantic model. The service-level settings (environment variables ``NLPMON_*``, YAML)
nest it; nothing here reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LibrdkafkaValue = str | int | float | bool

_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _check_topic_name(name: str) -> str:
    if not 0 < len(name) <= 249 or name in {".", ".."} or not set(name) <= _TOPIC_CHARS:
        raise ValueError(
            f"invalid Kafka topic name {name!r}: use 1-249 characters from [a-zA-Z0-9._-], not '.' or '..'"
        )
    return name


class KafkaSettings(BaseModel):
    """How the consumer runner reads events, writes dead letters and snapshots, and protects itself.

    >>> KafkaSettings(session_timeout_ms=2000).effective_heartbeat_ms()
    666
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port[,host:port]). None starts the embedded Tansu broker "
        "on a free loopback port (development only: memory storage, lost on exit).",
    )
    topic: str = Field(
        default="nlpmon.predictions", description="Input topic: one JSON prediction event per message."
    )
    group_id: str = Field(
        default="nlpmon", min_length=1, description="Consumer group id; also prefixes snapshot keys."
    )
    dead_letter_topic: str = Field(
        default="nlpmon.dead-letter", description="Rejected events go here with reason and origin headers."
    )
    state_topic: str = Field(
        default="nlpmon.state",
        description="Compacted topic of per-partition snapshots; created with the input topic's partition "
        "count and cleanup.policy=compact when missing.",
    )
    ground_truth_topic: str | None = Field(
        default=None,
        description="Topic of ground-truth (label) events, keyed by model like the input topic and with the "
        "same partition count (created so when missing): partition p of both topics goes to one processor "
        "(range assignment), whose snapshot covers both offsets. None: no ground truth.",
    )
    client_id: str = Field(
        default="nlpmon", min_length=1, description="client.id of every Kafka client (logs, quotas)."
    )
    create_missing_topics: bool = Field(
        default=True, description="Create the input, ground-truth, dead-letter and state topics when they do not "
        "exist (off: a missing one stops the start with an error naming it). The embedded broker always creates "
        "them.",
    )
    replication_factor: int = Field(
        default=1, ge=1, le=32, description="Replication factor of the topics nlpmon creates (3 on a production "
        "cluster; at most the number of brokers).",
    )

    batch_size: int = Field(
        default=5000, ge=1, le=1_000_000, description="Most messages taken per consume() call."
    )
    poll_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Longest wait of one consume() call; bounds the reaction to a stop.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        le=3_600_000,
        description="Group session timeout. Tansu holds a JoinGroup for half of it; tests use 2000.",
    )
    heartbeat_interval_ms: int | None = Field(
        default=None,
        ge=100,
        description="Group heartbeat interval; None means a third of session_timeout_ms.",
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=10_000,
        description="Longest gap between consume() calls before the group evicts this member.",
    )

    checkpoint_interval_events: int = Field(
        default=50_000,
        ge=1,
        description="Snapshot and commit after this many events (all assigned partitions together) "
        "since the last checkpoint.",
    )
    checkpoint_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Snapshot and commit at least this often while events arrive (seconds).",
    )
    delivery_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest time a checkpoint waits for dead-letter and snapshot acknowledgements before "
        "consumption pauses (a periodic one: at most max_batch_s, in flight while the loop keeps consuming, "
        "never blocking it; one on revocation or shutdown: blocking, the final one at most shutdown_grace_s); "
        "past it the loop keeps polling while the client retries the deliveries for as long as the broker is "
        "away, then commits. Nothing is committed before.",
    )
    max_consecutive_commit_failures: int = Field(
        default=3,
        ge=1,
        description="Checkpoints whose commit failed in a row before the runner gives up and stops. The "
        "snapshot already covers the work, so a failed commit loses nothing.",
    )
    max_batch_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest time spent applying one consumed batch before the loop polls again (the rest is "
        "fetched again); keeps the member in its group and bounds the reaction to a stop. Must stay below "
        "half of max_poll_interval_ms.",
    )
    poll_gap_target_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Time the loop aims to spend between two polls (the longest poll gap it aims for). A batch "
        "is applied for at most this long after its poll (half of it when a checkpoint writes snapshots in the "
        "same iteration; max_batch_s if lower), in slices sized to the time left, and the rest is fetched "
        "again; the messages taken per poll adapt to what fits (at most batch_size). Work after the poll "
        "(events held for a calibration, checkpoint snapshots past the first) spreads over the next "
        "iterations once it is reached. Lower: shorter gaps, more polls; higher: fewer, larger batches.",
    )
    restore_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest time to read a state partition to its end on assignment."
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="Time allowed to finish the in-flight batch, checkpoint and close on stop.",
    )
    statistics_interval_ms: int = Field(
        default=2000, ge=100, description="librdkafka statistics period; consumer lag is taken from these."
    )
    max_snapshot_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest snapshot write (its body and the parts not written before, all chunks "
        "together); a larger one stops the runner before it commits.",
    )
    snapshot_chunk_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest message of a snapshot chunk (snapshots are split into chunks); keep it below "
        "the broker's and the producer's message.max.bytes (1 MB by default).",
    )

    circuit_window_events: int = Field(
        default=1000,
        ge=1,
        description="The circuit breaker looks at the invalid ratio over this many last events.",
    )
    circuit_min_events: int = Field(
        default=100, ge=1, description="The ratio rule applies only once the window holds this many events."
    )
    circuit_max_invalid_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The breaker opens when the invalid ratio in the window exceeds this.",
    )
    circuit_max_consecutive_invalid: int = Field(
        default=500, ge=1, description="The breaker opens after this many invalid events in a row."
    )
    circuit_pause_s: float = Field(
        default=60.0,
        gt=0,
        description="While open, the assigned partitions stay paused this long before a retry.",
    )

    librdkafka_options: dict[str, LibrdkafkaValue] = Field(
        default_factory=dict,
        description="Extra librdkafka options for every client (security.protocol, sasl.*, ssl.*).",
    )
    consumer_options: dict[str, LibrdkafkaValue] = Field(
        default_factory=dict,
        description="Extra librdkafka options for the consumer only (win over the rest).",
    )
    producer_options: dict[str, LibrdkafkaValue] = Field(
        default_factory=dict,
        description="Extra librdkafka options for the producer only (win over the rest).",
    )

    @field_validator("topic", "dead_letter_topic", "state_topic", "ground_truth_topic")
    @classmethod
    def _valid_topic(cls, value: str | None) -> str | None:
        return None if value is None else _check_topic_name(value)

    @field_validator("bootstrap_servers")
    @classmethod
    def _valid_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h.removeprefix("[") for h in hosts):
            raise ValueError(f"bootstrap_servers {value!r} must be host:port[,host:port...]")
        return ",".join(hosts)

    @property
    def loop_budget_s(self) -> float:
        """The time the loop aims to spend between two polls: ``poll_gap_target_s``, or ``max_batch_s`` if
        lower."""
        return min(self.poll_gap_target_s, self.max_batch_s)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        names = [self.topic, self.dead_letter_topic, self.state_topic]
        names += [self.ground_truth_topic] if self.ground_truth_topic is not None else []
        if len(set(names)) != len(names):
            raise ValueError("topic, dead_letter_topic, state_topic and ground_truth_topic must be different topics")
        strategy = {**self.librdkafka_options, **self.consumer_options}.get("partition.assignment.strategy")
        if self.ground_truth_topic is not None and strategy not in (None, "range"):
            raise ValueError(f"partition.assignment.strategy={strategy!r} cannot keep partition p of the input and "
                             "ground-truth topics together; leave it unset (range) or drop ground_truth_topic")
        if self.circuit_min_events > self.circuit_window_events:
            raise ValueError("circuit_min_events must not exceed circuit_window_events")
        if self.max_batch_s * 2000 > self.max_poll_interval_ms:
            raise ValueError(f"max_batch_s={self.max_batch_s} must be below half of max_poll_interval_ms="
                             f"{self.max_poll_interval_ms}: lower it or raise max_poll_interval_ms")
        if self.heartbeat_interval_ms is not None and self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be smaller than session_timeout_ms")
        for name in ("librdkafka_options", "consumer_options", "producer_options"):
            options: dict[str, Any] = getattr(self, name)
            managed = _MANAGED_OPTIONS & options.keys()
            if managed:
                raise ValueError(f"{name} may not set {sorted(managed)}: the runner manages them")
        producer = {**self.librdkafka_options, **self.producer_options}
        message_max = int(producer.get("message.max.bytes", _LIBRDKAFKA_MESSAGE_MAX_BYTES))
        if self.snapshot_chunk_bytes + _CHUNK_KEY_ALLOWANCE > message_max:
            raise ValueError(
                f"snapshot_chunk_bytes={self.snapshot_chunk_bytes} leaves no room below the producer's "
                f"message.max.bytes={message_max}; lower it or raise message.max.bytes (on the broker too)"
            )
        return self

    def client_options(self) -> dict[str, Any]:
        """The options every Kafka client nlpmon builds starts from (security.protocol, sasl.*, ssl.* of
        ``librdkafka_options``, and ``client.id``): topic set-up, consumer, producer, state restore."""
        return {**self.librdkafka_options, "client.id": self.client_id}

    def effective_heartbeat_ms(self) -> int:
        """The heartbeat interval in force (explicit, or a third of the session timeout)."""
        return self.heartbeat_interval_ms or max(100, self.session_timeout_ms // 3)


#: librdkafka's default ``message.max.bytes`` (a produced key + value larger than it is refused).
_LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
#: Room left for a snapshot chunk's key next to its value.
_CHUNK_KEY_ALLOWANCE = 1024

#: Options whose value the at-least-once contract depends on; extra options may not override them.
_MANAGED_OPTIONS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "bootstrap.servers",
        "on_commit",
        "stats_cb",
        "error_cb",
        "enable.idempotence",
        "acks",
    }
)
