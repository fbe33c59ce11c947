"""Rate-limited Kafka client errors: one log line per broker state change, plus a count.

During a broker outage librdkafka reports every failed connection attempt (several a second) twice: as its
own log line and through ``error_cb``. :class:`ClientErrorGate` turns that into one WARNING when the first
error arrives ("unreachable ... retrying"), silence while the outage lasts (every error counted), and one
WARNING when the broker is reachable again (how long, how many errors in between). librdkafka's own log
lines (printed to stderr, outside Python logging) are cut down with :data:`CLIENT_LOG_LEVEL`: the errors
they repeat arrive through ``error_cb`` anyway. (Routing them to a Python logger with the ``logger``
option is not an option: confluent-kafka then aborts the process when a line arrives inside a rebalance
callback, ``CallState_get: Assertion `cs != NULL' failed``.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

#: librdkafka ``log_level`` of the runner's clients: critical lines only (errors come through error_cb).
CLIENT_LOG_LEVEL = 2


class ClientErrorGate:
    """Counts client errors and logs only broker state changes. Thread-safe (callbacks may come from any
    client thread that serves them).

    >>> gate = ClientErrorGate(logging.getLogger("doc"), clock=iter([0.0, 5.0]).__next__)
    >>> gate.error(KafkaError(KafkaError._TRANSPORT, "refused")); gate.error(KafkaError(KafkaError._TRANSPORT, "x"))
    >>> gate.down, gate.errors_total, gate.suppressed
    (True, 2, 1)
    >>> gate.reachable(); gate.down
    False
    """

    def __init__(self, logger: logging.Logger, *, where: str = "Kafka",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._where = where
        self._clock = clock
        self._lock = threading.Lock()
        self.down = False
        self.errors_total = 0
        self.suppressed = 0  # errors not logged during the current outage
        self.outages = 0
        self.last_error = ""
        self._down_since = 0.0

    def error(self, error: KafkaError) -> None:
        """An ``error_cb`` error: logged when it is the first of an outage (or fatal), counted always."""
        text = error.str()
        with self._lock:
            self.errors_total += 1
            self.last_error = text
            first = not self.down
            if first:
                self.down = True
                self.outages += 1
                self._down_since = self._clock()
                self.suppressed = 0
            else:
                self.suppressed += 1
        if error.fatal():
            self._log.error("kafka client: fatal error: %s", text)
        elif first:
            self._log.warning("kafka client: %s unreachable or failing (%s); retrying with backoff, further client "
                              "errors are counted (nlpmon_kafka_client_errors_total) until it is back",
                              self._where, text)

    def reachable(self) -> None:
        """A broker connection is up (from the statistics): log the end of the outage, if there was one."""
        with self._lock:
            if not self.down:
                return
            self.down = False
            seconds, count = self._clock() - self._down_since, self.suppressed
        self._log.warning("kafka client: %s reachable again after %.0f s (%d client errors not logged "
                          "meanwhile)", self._where, seconds, count)
