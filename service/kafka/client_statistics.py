"""The part of librdkafka's statistics (``stats_cb`` JSON) the runner reads: each partition's high
watermark (for the lag) and whether any broker connection is up (for /readyz)."""

from __future__ import annotations

import logging

import msgspec


class StatisticsPartition(msgspec.Struct):
    hi_offset: int = -1


class StatisticsTopic(msgspec.Struct):
    partitions: dict[str, StatisticsPartition] = {}


class StatisticsBroker(msgspec.Struct):
    state: str = ""


class ClientStatistics(msgspec.Struct):
    """One statistics report: per topic, per partition number (a string, ``"-1"`` for the internal one)."""

    topics: dict[str, StatisticsTopic] = {}
    brokers: dict[str, StatisticsBroker] = {}

    def broker_up(self) -> bool:
        """Is any broker connection in state UP?"""
        return any(b.state == "UP" for b in self.brokers.values())


class StatisticsReader:
    """Decodes statistics reports; one that cannot be read is counted in :attr:`undecodable` and logged
    (once: the first one; the lag then stays at its last value until a readable report arrives)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._decoder = msgspec.json.Decoder(ClientStatistics)
        self._log = logger
        self.undecodable = 0

    def read(self, raw: str | bytes) -> ClientStatistics | None:
        """The report, or None (counted, the first one logged) when it is not valid statistics JSON."""
        try:
            return self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.undecodable += 1
            if self.undecodable == 1:
                self._log.warning("librdkafka statistics could not be read (%s): the consumer lag is not updated "
                                  "from such reports (logged once; counted in "
                                  "nlpmon_kafka_statistics_undecodable_total)", exc)
            return None


__all__ = ["ClientStatistics", "StatisticsReader"]
