"""``nlpmon run --processes N``: N members of one consumer group, started and watched by one parent.

The parent (``run_members``) starts the embedded broker when no bootstrap servers are configured (once, for
every member), creates the event topic, and starts N child processes (``python -m nlpmon.app.members``),
each the ordinary single-process service (:class:`nlpmon.app.service.NlpmonService`) on an ephemeral
127.0.0.1 port, plain HTTP, no web config. The children are members of the same consumer group: Kafka
spreads the partitions over them and moves a member's partitions (restored from the state topic) when it
dies, exactly as between separately started services.

The parent serves what the user scrapes and reads, on the configured host and port with the configured
web config (TLS, basic auth) as one process does:

- ``/metrics``: the members' expositions fetched concurrently (``SCRAPE_TIMEOUT_S`` each) and merged by
  :mod:`nlpmon.observability.aggregate` (counters summed, a model's gauges from the member that owns it,
  process-level gauges with a ``member`` label), plus the parent's ``nlpmon_member_restarts_total``.
- ``/models``, ``/api/models``: the merged lists of the members; ``/models/<model>`` and
  ``/api/models/<model>``: the full report fetched from the member that holds the model.
- ``/readyz``: ready when every member answers ready (one check per member); ``/healthz``: alive while
  every member's loop polled within ``liveness_limit_s`` (a member that does not answer counts from the
  last time it did).

A member that exits is restarted after a backoff (``RESTART_BACKOFF_S`` doubling up to
``MAX_RESTART_BACKOFF_S``, back to the start once it ran ``STABLE_S``), logged and counted. A member that
exits before it was ever ready (a bad setting) stops the command with its error. When nlpmon creates the
event topic it gives it at least N partitions (a member without a partition is never ready). SIGTERM/SIGINT to the
parent (``stop``) sends SIGTERM to every member, which checkpoints and commits as one process does, and
waits at most ``STOP_TIMEOUT_S`` before it kills the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, TextIO, cast
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric

from ..monitor.page_view import ModelPage, ModelSummary
from ..observability import aggregate
from ..observability.http import ObservabilityServer, find_model
from ..observability.metrics import SPECS
from .settings import ServiceSettings

log = logging.getLogger("nlpmon")

SCRAPE_TIMEOUT_S = 2.0  # per member fetch of /metrics, /readyz, /healthz, /api/models
RESTART_BACKOFF_S = 1.0
MAX_RESTART_BACKOFF_S = 30.0
STABLE_S = 60.0  # a member that ran this long restarts after the first backoff again
STOP_TIMEOUT_S = 40.0
READY_TIMEOUT_S = 120.0  # a member that never reports its port in this long is killed and restarted
LIST_PAGES = 100  # pages of /api/models read from one member (MAX_PAGE_MODELS each)
RESTARTS = "nlpmon_member_restarts_total"


class MemberError(RuntimeError):
    """The members could not start (the message is one line: what failed and what to do)."""


@dataclass
class Member:
    """One child process slot; ``incarnation`` counts its starts."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    port: int | None = None
    incarnation: int = 0
    started_at: float = 0.0
    last_contact: float = 0.0
    ever_ready: bool = False
    failures: int = 0
    restart_at: float | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.index)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _die_with_parent() -> None:
    """In a member before exec: Linux sends it SIGTERM when the parent's thread that started it ends (the
    parent was killed), so no member outlives its parent."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def get(port: int, path: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> tuple[int, bytes] | None:
    """GET http://127.0.0.1:port/path: (status, body), or None when the member does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Members:
    """The member slots and what the parent's HTTP server asks of them (thread-safe)."""

    def __init__(self, count: int, command: Callable[[Member], list[str]], *,
                 clock: Callable[[], float] = time.monotonic, restarts: Counter | None = None) -> None:
        self.members = [Member(i) for i in range(count)]
        self.command = command
        self.clock = clock
        self.restarts = restarts
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * count), thread_name_prefix="nlpmon-members")
        self._last_seen: dict[int, tuple[int, list[Metric]]] = {}  # member -> (incarnation, counter families)
        self._carried: dict[int, list[Metric]] = {}  # counters of finished incarnations, summed
        for m in self.members:
            if restarts is not None:
                restarts.labels(m.name)  # exported at 0

    # -- processes ------------------------------------------------------------------------------------
    def start(self, m: Member) -> None:
        """Start (or restart) member ``m``; its port arrives on its stdout when it is ready."""
        m.port = None
        m.incarnation += 1
        m.started_at = m.last_contact = self.clock()
        m.restart_at = None
        m.proc = subprocess.Popen(self.command(m), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  preexec_fn=_die_with_parent)
        m.reader = threading.Thread(target=self._read_ready, args=(m, m.proc, m.incarnation), daemon=True,
                                    name=f"nlpmon-member-{m.index}")
        m.reader.start()

    def _read_ready(self, m: Member, proc: subprocess.Popen[bytes], incarnation: int) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:  # ends when the child exits
                try:
                    port = int(json.loads(line)["port"])
                except (ValueError, KeyError, TypeError):
                    continue
                with self._lock:
                    if m.incarnation == incarnation:
                        m.port, m.ever_ready, m.last_contact = port, True, self.clock()

    def check(self, stopping: bool) -> None:
        """Restart members that exited (when due), kill members that never got ready. Raises MemberError when
        a member exited before it was ever ready (its own error line is on stderr)."""
        now = self.clock()
        for m in self.members:
            if m.proc is None:
                continue
            code = m.proc.poll()
            if code is None:
                if m.port is None and now - m.started_at > READY_TIMEOUT_S:
                    log.warning("member %d did not get ready in %.0f s: killing it", m.index, READY_TIMEOUT_S)
                    m.proc.kill()
                continue
            if m.restart_at is None:  # just exited
                self._exited(m)
                if stopping:
                    continue
                if not m.ever_ready:
                    raise MemberError(f"member {m.index} exited with code {code} before it was ready; "
                                      "see its error above")
                m.failures = 1 if now - m.started_at >= STABLE_S else m.failures + 1
                delay = min(MAX_RESTART_BACKOFF_S, RESTART_BACKOFF_S * 2 ** (m.failures - 1))
                m.restart_at = now + delay
                log.warning("member %d (pid %d) exited with code %s: restarting it in %.0f s; the group restores "
                            "its partitions from the state topic", m.index, m.proc.pid, code, delay)
            elif not stopping and now >= m.restart_at:
                if self.restarts is not None:
                    self.restarts.labels(m.name).inc()
                self.start(m)
                log.warning("member %d restarted (pid %d)", m.index, m.proc.pid)

    def _exited(self, m: Member) -> None:
        """Keep the counters member ``m`` last showed (they stay in the merged sums) and forget its port."""
        with self._lock:
            seen = self._last_seen.pop(m.index, None)
            if seen is not None and seen[0] == m.incarnation:
                self._carried[m.index] = aggregate.sum_families([self._carried.get(m.index, []), seen[1]])
            m.port = None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM to every member, wait up to ``timeout_s`` in all, SIGKILL the rest. True when every member
        exited with 0 by itself."""
        procs = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = self.clock() + timeout_s
        clean = True
        for p in procs:
            try:
                clean &= p.wait(max(0.0, deadline - self.clock())) == 0
            except subprocess.TimeoutExpired:
                log.warning("member pid %d did not stop in %.0f s: killing it", p.pid, timeout_s)
                p.kill()
                p.wait(10)
                clean = False
        self._pool.shutdown(wait=False, cancel_futures=True)
        return clean

    # -- what the HTTP server reads -------------------------------------------------------------------
    def fetch(self, path: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[int, tuple[int, tuple[int, bytes] | None]]:
        """``path`` from every member with a port, concurrently: member -> (incarnation, answer or None).
        Members without a port (starting, dead) are absent."""
        with self._lock:
            targets = [(m, m.port, m.incarnation) for m in self.members if m.port is not None]
        futures = {self._pool.submit(get, port, path, timeout_s): (m, inc) for m, port, inc in targets}
        wait_futures(futures, timeout=timeout_s + 1.0)
        out: dict[int, tuple[int, tuple[int, bytes] | None]] = {}
        for fut, (m, inc) in futures.items():
            answer = fut.result() if fut.done() else None
            out[m.index] = (inc, answer)
            if answer is not None:
                with self._lock:
                    if m.incarnation == inc:
                        m.last_contact = self.clock()
        return out

    def metric_families(self) -> list[Metric]:
        """The merged families of the members (see :mod:`nlpmon.observability.aggregate`)."""
        live: dict[str, list[Metric]] = {}
        for index, (inc, answer) in sorted(self.fetch("/metrics").items()):
            if answer is None or answer[0] != 200:
                continue
            try:
                families = aggregate.parse(answer[1].decode())
            except ValueError as exc:
                log.warning("member %d served unreadable metrics: %s", index, exc)
                continue
            live[str(index)] = families
            with self._lock:
                if self.members[index].incarnation == inc:
                    self._last_seen[index] = (inc, aggregate.summed_only(families))
        with self._lock:
            kept = list(self._carried.values())
            kept += [fams for i, (_, fams) in self._last_seen.items() if str(i) not in live]
        return aggregate.merge(live, kept, exclude=(RESTARTS,))

    def summaries(self) -> dict[str, tuple[int, ModelSummary]]:
        """Every member's ``/api/models`` rows, each with the member that holds the model. A model shown by
        two members (a partition moving) is the one with the newer last event."""
        out: dict[str, tuple[int, ModelSummary]] = {}
        answers: dict[int, list[dict[str, Any]]] = {}
        offset = 0
        for _ in range(LIST_PAGES):
            more = False
            for index, (_, answer) in self.fetch(f"/api/models?limit=1000&offset={offset}").items():
                if answer is None or answer[0] != 200:
                    continue
                body = json.loads(answer[1])
                answers.setdefault(index, []).extend(body["models"])
                more |= body["offset"] + len(body["models"]) < body["total"]
            if not more:
                break
            offset += 1000
        for index in sorted(answers):
            for row in answers[index]:
                s = ModelSummary.from_json(row)
                old = out.get(s.key)
                if old is None or (s.last_event_time or 0) > (old[1].last_event_time or 0):
                    out[s.key] = (index, s)
        return out

    def full_report(self, index: int, model: str, version: str) -> dict[str, Any] | None:
        """The full report of ``model`` ``version`` from member ``index`` (None when it does not answer)."""
        with self._lock:
            port = self.members[index].port
        if port is None:
            return None
        answer = get(port, f"/api/models/{quote(model, safe='')}?version={quote(version, safe='')}")
        return json.loads(answer[1]) if answer is not None and answer[0] == 200 else None

    def readiness(self) -> dict[str, bool]:
        """One check per member: ``member_<i>`` true when it answers /readyz with 200."""
        answers = self.fetch("/readyz")
        return {f"member_{m.index}": (a := answers.get(m.index, (0, None))[1]) is not None and a[0] == 200
                for m in self.members}

    def readiness_notes(self) -> list[str]:
        notes = []
        for index, (_, answer) in sorted(self.fetch("/readyz").items()):
            if answer is not None:
                try:
                    notes += [f"member {index}: {n}" for n in json.loads(answer[1]).get("notes", [])]
                except ValueError:
                    continue
        return notes

    def last_poll(self) -> float:
        """The parent's "last poll": now minus the oldest poll age of the members (a member that does not
        answer: the time since it last answered, or since it started)."""
        answers = self.fetch("/healthz")
        now = self.clock()
        oldest = 0.0
        for m in self.members:
            answer = answers.get(m.index, (0, None))[1]
            try:
                age = float(json.loads(answer[1])["last_poll_age_s"]) if answer is not None else None
            except (ValueError, KeyError, TypeError):
                age = None
            with self._lock:
                oldest = max(oldest, age if age is not None else now - m.last_contact)
        return now - oldest


class _MergedMetrics:
    """A collector whose families are the members' merged metrics, fetched at each scrape."""

    def __init__(self, members: Members) -> None:
        self.members = members

    def collect(self) -> list[Metric]:
        return self.members.metric_families()

    def describe(self) -> list[Metric]:
        return []


class MembersServer(ObservabilityServer):
    """The parent's HTTP server: the ordinary server whose model list is the members' rows and whose model
    lookups fetch the full report from the member that holds the model."""

    def __init__(self, members: Members, registry: CollectorRegistry, **kw: Any) -> None:
        super().__init__(registry, reports=dict, readiness=members.readiness,
                         last_poll=members.last_poll, readiness_notes=members.readiness_notes,
                         clock=members.clock, **kw)
        self.members = members

    def summaries(self) -> dict[str, ModelSummary]:
        return {k: s for k, (_, s) in self.members.summaries().items()}

    def _member_report(self, name: str, version: str | None) -> tuple[int, str, dict[str, Any]]:
        """``(200, key, the member's /api/models/<model> JSON)`` or ``(status, "", error)``."""
        rows = self.members.summaries()
        status, key, error = find_model({k: (s.model, s.model_version) for k, (_, s) in rows.items()}, name, version)
        if status != 200:
            return status, "", error
        index, summary = rows[key]
        full = self.members.full_report(index, name, summary.model_version)
        if full is None:
            return 404, "", {"error": f"model {name!r} is moving between members; try again in a few seconds",
                             "models": [name]}
        return 200, str(full.pop("key", key)), full

    def model(self, name: str, version: str | None) -> tuple[int, Any]:
        """The member's answer as it is."""
        status, key, body = self._member_report(name, version)
        return (200, {"key": key, **body}) if status == 200 else (status, body)

    def full_view(self, name: str, version: str | None) -> tuple[int, str, ModelPage | None, dict[str, Any]]:
        status, key, body = self._member_report(name, version)
        return (200, key, ModelPage.from_json(body), {}) if status == 200 else (status, "", None, body)


def member_command(index: int, spec: Mapping[str, Any]) -> list[str]:
    """The command line of member ``index`` (``spec``: the config file, flags and settings overrides)."""
    return [sys.executable, "-m", "nlpmon.app.members", "--member", str(index), "--spec", json.dumps(spec)]


def run_members(settings: ServiceSettings, stop: threading.Event, *, config_file: str | None,
                flags: Mapping[str, Any], demo: Any = None, verbose: bool = False,
                on_ready: Callable[[str, int], None] | None = None, poll_s: float = 0.2) -> int:
    """Run ``settings.process_count()`` members until ``stop`` is set (see the module docstring). Returns 0
    when every member stopped cleanly, 1 otherwise. Raises MemberError (one line) when they cannot start."""
    from ..kafka.broker import bootstrap_servers_for
    from ..kafka.topics import TopicSetup
    from .demo import publish_demo

    count = settings.process_count()
    with bootstrap_servers_for(settings.kafka_settings(), logger=log) as bootstrap:
        ks = settings.kafka_settings(bootstrap)
        if settings.bootstrap_servers is None:  # the embedded broker is memory-only: its topics never pre-exist
            ks = ks.model_copy(update={"create_missing_topics": True})
        # a partition for every member when nlpmon creates it; TopicSetupError (a UserError) names the topic
        setup = TopicSetup(ks)
        have = setup.ensure_input(max(settings.partitions, count))
        # the state, dead-letter and ground-truth topics too, before any member or the demo writes: a label
        # the demo produced first would create the ground-truth topic with the broker's default partitions
        setup.prepare()
        if have < count:
            log.warning("topic %s has %d partition(s) for %d members: %d member(s) get none and are "
                        "never ready (/readyz); add partitions or run fewer processes", settings.topic,
                        have, count, count - have)
        spec = {"config": config_file, "flags": dict(flags), "verbose": verbose,
                "update": {"bootstrap_servers": bootstrap, "port": 0, "host": "127.0.0.1",
                           "web_config_file": None, "processes": 1}}
        registry = CollectorRegistry()
        restarts = Counter(RESTARTS, SPECS[RESTARTS].help, labelnames=SPECS[RESTARTS].labels, registry=registry)
        members = Members(count, lambda m: member_command(m.index, spec), restarts=restarts)
        registry.register(_MergedMetrics(members))
        server = MembersServer(members, registry, host=settings.host, port=settings.port,
                               liveness_limit_s=settings.liveness_limit_s, web=settings.web_config(),
                               open_healthz=settings.open_healthz)
        server.start()
        clean = False
        demo_thread = None
        try:
            for m in members.members:
                members.start(m)
            log.warning("nlpmon: %d members consuming %s on %s; metrics and models at %s/", count, settings.topic,
                        bootstrap, server.url)
            if on_ready is not None:
                on_ready(bootstrap, server.port)
            if demo is not None:
                demo_thread = threading.Thread(
                    target=publish_demo, args=(bootstrap, settings.topic, stop, demo),
                    kwargs={"labels_topic": settings.ground_truth_topic or None,
                            "client_options": ks.client_options()}, daemon=True, name="nlpmon-demo")
                demo_thread.start()
            while not stop.wait(poll_s):
                members.check(stopping=False)
        finally:
            stop.set()
            log.warning("stopping %d members", count)
            clean = members.stop()
            members.check(stopping=True)
            server.stop()
            if demo_thread is not None:
                demo_thread.join(timeout=10)
    return 0 if clean else 1


class _Prefixed(io.TextIOBase):
    """A text stream writing each line to ``out`` behind ``prefix`` (members' progress lines)."""

    def __init__(self, out: TextIO, prefix: str) -> None:
        self.out, self.prefix = out, prefix

    def write(self, s: str) -> int:
        self.out.write("".join(self.prefix + line for line in s.splitlines(keepends=True)))
        return len(s)

    def flush(self) -> None:
        self.out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """A member: the ordinary service with the parent's settings and overrides; prints ``{"port": N}`` on
    stdout once it serves HTTP. Exit 2 with one line on stderr on a bad setting."""
    from threadpoolctl import threadpool_limits

    from ..observability.oneline import OneLineFormatter
    from .service import NlpmonService
    from .settings import SettingsError, load_settings

    p = argparse.ArgumentParser(prog="nlpmon-member")
    p.add_argument("--member", type=int, required=True)
    p.add_argument("--spec", required=True)
    args = p.parse_args(argv)
    spec = json.loads(args.spec)
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(f"%(asctime)s %(levelname)s [member {args.member}] %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if spec.get("verbose") else logging.WARNING, handlers=[handler])
    if not spec.get("verbose"):
        logging.getLogger("nlpmon").setLevel(logging.INFO)
    flags = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["flags"].items()}
    try:
        settings = load_settings(spec["config"], **flags).model_copy(update=spec["update"])
    except SettingsError as exc:
        print(f"nlpmon: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(_bootstrap: str, port: int) -> None:
        print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)

    progress = cast(TextIO, _Prefixed(sys.stderr, f"[member {args.member}] "))
    service = NlpmonService(settings, progress_stream=progress)
    try:
        with threadpool_limits(limits=1):
            return service.run(stop, on_ready=ready)
    except Exception as exc:  # one line, as the single process's cli says it
        print(f"nlpmon: member {args.member}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
