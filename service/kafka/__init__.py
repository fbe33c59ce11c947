"""The Kafka shell around the pure core: consume batches, process per partition, dead-letter, checkpoint.

- ``settings``: :class:`KafkaSettings`, nested by the service settings.
- ``processor``: the contract with the core (:class:`Record`, :class:`Rejected`, :class:`PartitionProcessor`).
- ``runner``: :class:`ConsumerRunner`, the consume loop (poll, batches, slices, pause/resume) that wires the two below.
- ``checkpoints``: the checkpoint policy (:class:`Checkpointer`): when to snapshot and commit, what stays pending
  (and pauses consumption) while the broker has not acknowledged the dead letters or snapshots.
- ``rebalance``: where each assigned partition starts (:func:`plan_start`, pure) and the rebalance callbacks
  (:class:`Rebalancer`: restore on assignment, checkpoint on revocation, drop on loss).
- ``runner_metrics``: :class:`RunnerMetrics`, the loop's one counters type, and the per-batch report.
- ``partition_progress``: where each assigned partition stands (applied, snapshotted, committed offsets).
- ``slicing``: how many records the loop applies per slice, to poll in time.
- ``write_costs``: each partition's last snapshot write, to predict whether the next fits in an iteration.
- ``state_loss``: noticing a broker that lost the offsets or snapshots this process wrote.
- ``client_config``: the librdkafka configuration of the loop's producer, consumer and snapshot reader.
- ``client_statistics``: the part of librdkafka's statistics the loop reads (high watermarks, broker up).
- ``snapshot_format``: the bytes and keys of a partition snapshot and its chunks (pure, no Kafka).
- ``state_store``: writing those snapshots to a compacted topic and reading the latest back (Kafka I/O).
- ``dead_letter``: rejected events with reason and origin headers.
- ``circuit_breaker``: pauses consumption when (almost) everything is invalid.
- ``topics``: every topic check and creation (:class:`TopicSetup`), with the client options.
- ``publish``: the JSONL publisher and delivery tracking.
- ``broker``: the embedded Tansu broker for development and tests.
"""

from .broker import BrokerError, EmbeddedBroker, bootstrap_servers_for
from .checkpoints import Checkpointer, CommitError, RunnerError
from .circuit_breaker import CircuitBreaker, CircuitState
from .dead_letter import DeadLetterWriter
from .processor import PartitionProcessor, ProcessorFactory, Record, Rejected
from .publish import DeliveryError, PublishResult, publish_file
from .rebalance import Rebalancer, StartPlan, plan_start
from .runner import ConsumerRunner
from .runner_metrics import BatchReport, PartitionBatch, RunnerMetrics
from .settings import KafkaSettings
from .snapshot_format import PartitionSnapshot
from .state_store import StateRestoreError, StateStore
from .topics import TopicSetup, TopicSetupError, create_topic, topic_partition_count

__all__ = [
    "BatchReport",
    "BrokerError",
    "Checkpointer",
    "CircuitBreaker",
    "CircuitState",
    "CommitError",
    "ConsumerRunner",
    "DeadLetterWriter",
    "DeliveryError",
    "EmbeddedBroker",
    "KafkaSettings",
    "PartitionBatch",
    "PartitionProcessor",
    "PartitionSnapshot",
    "ProcessorFactory",
    "PublishResult",
    "Rebalancer",
    "Record",
    "Rejected",
    "RunnerError",
    "RunnerMetrics",
    "StartPlan",
    "StateRestoreError",
    "StateStore",
    "TopicSetup",
    "TopicSetupError",
    "bootstrap_servers_for",
    "create_topic",
    "plan_start",
    "publish_file",
    "topic_partition_count",
]
