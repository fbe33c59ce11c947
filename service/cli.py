"""The ``nlpmon`` command line. Each subcommand is a thin shell around the library.

Errors a user can meet (missing file, bad config, bad value, unreachable broker: every ``nlpmon.errors.UserError``)
end in one line on stderr and exit 2; any other exception is a bug and ends in a traceback (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import UserError
from .monitor.config import MonitorConfig
from .observability.oneline import OneLineFormatter
from .quality.quality_monitor import QualityConfig


class UsageError(UserError):
    """A problem with the command line or its files the user can fix; printed as one line without a traceback."""


def _yaml_settings(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {p} is not valid YAML: {exc}") from None
    except RecursionError:
        raise UsageError(f"config file {p} nests too deep to read") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"config file {p} must hold a mapping of settings")
    return loaded


def load_monitor_config(path: str | None, overrides: dict[str, Any]) -> MonitorConfig:
    """MonitorConfig from a YAML file (top-level keys, or under ``monitor:``) plus CLI overrides."""
    loaded = _yaml_settings(path)
    data = dict(loaded.get("monitor", {k: v for k, v in loaded.items() if k != "quality"}))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return MonitorConfig(**data)
    except ValidationError as exc:
        raise UsageError(_bad_setting("monitor", exc)) from None


def load_quality_config(path: str | None) -> QualityConfig:
    """QualityConfig from the ``quality:`` section of a YAML file (defaults without one)."""
    try:
        return QualityConfig(**dict(_yaml_settings(path).get("quality") or {}))
    except ValidationError as exc:
        raise UsageError(_bad_setting("quality", exc)) from None


def _bad_setting(section: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return f"bad {section} setting {where}: {err['msg']}"


def _cmd_schema(args: argparse.Namespace) -> int:
    from .events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay, summary, terminal_progress

    config = load_monitor_config(args.config, {"false_alarm_rate": args.false_alarm_rate})
    for p in [args.events, *(args.reference or []), *([args.ground_truth] if args.ground_truth else [])]:
        if not Path(p).is_file():
            raise UsageError(f"file not found: {p}")
    progress = terminal_progress()
    quality = load_quality_config(args.config) if args.ground_truth else None
    report = replay(args.events, args.reference or [], config, ground_truth_path=args.ground_truth,
                    quality_config=quality, progress=progress)
    if progress is not None:
        sys.stderr.write("\n")
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(report, indent=1, default=_json_default))
        except OSError as exc:
            raise UsageError(f"cannot write the report to {args.report}: {exc.strerror or exc}") from None
    print(summary(report))
    if args.report:
        print(f"report written to {args.report}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .monitor.model_monitor import ModelMonitor
    from .replay import load_references

    config = load_monitor_config(args.config, {"false_alarm_rate": args.false_alarm_rate})
    if not Path(args.reference).is_file():
        raise UsageError(f"file not found: {args.reference}")
    ref = load_references([args.reference])
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in ref.events:
        groups.setdefault((e.model, e.model_version), []).append(e)
    if not groups:
        raise UsageError(f"no valid events in {args.reference} ({ref.invalid} invalid)")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the profile folder {out}: {exc.strerror or exc}") from None
    for (model, version), events in groups.items():
        mon = ModelMonitor(model, version, config)
        mon.add_reference(events)
        if not mon._calibrate(mon.pending_reference, "reference"):
            raise UsageError(f"{model}/{version}: {mon.reference_error}")
        assert mon.profile is not None
        path = out / f"{_safe(model)}--{_safe(version)}.nlpmon"
        mon.profile.save(path)
        print(f"{model}/{version}: {mon.profile.events} events, {len(mon.profile.signals)} signals calibrated "
              f"in {mon.profile.calibration_seconds:.1f} s -> {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .app.demo import DemoPlan
    from .app.service import NlpmonService
    from .app.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config, bootstrap_servers=args.bootstrap_servers, topic=args.topic,
                                 port=args.port, host=args.host, group_id=args.group_id,
                                 web_config_file=args.web_config_file, processes=_processes(args.processes),
                                 reference=tuple(args.reference) if args.reference else None)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("nlpmon").setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("nlpmon").warning("signal %d: stopping after the current slice, saving state", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    demo = DemoPlan(rate=args.demo_rate) if args.demo else None
    from confluent_kafka import KafkaException

    if settings.process_count() > 1:  # a supervising parent of N ordinary members (service/app/members.py)
        from .app.members import MemberError, run_members

        try:
            return run_members(settings, stop, config_file=args.config, flags=_member_flags(args), demo=demo,
                               verbose=args.verbose)
        except (MemberError, OSError) as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        except KafkaException as exc:
            raise UsageError(kafka_error(exc, "bootstrap_servers and kafka.librdkafka_options")) from None

    try:
        return NlpmonService(settings).run(stop, demo=demo)
    except UserError:
        raise
    except OSError as exc:  # a reference file that cannot be read, the embedded broker's binary or folder
        raise UsageError(str(exc).splitlines()[0]) from None
    except KafkaException as exc:  # a client refused its options, or the cluster refused the client
        raise UsageError(kafka_error(exc, "bootstrap_servers and kafka.librdkafka_options")) from None


def _processes(raw: str | None) -> int | str | None:
    """``--processes``: a whole number or ``auto`` (validated by the settings)."""
    return int(raw) if raw is not None and raw.strip().isdigit() else raw


def _member_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of ``nlpmon run`` that its members load their settings with (the parent overrides the
    rest: port, host, web config, processes, bootstrap servers)."""
    return {"topic": args.topic, "group_id": args.group_id,
            "reference": list(args.reference) if args.reference else None}


def _cmd_demo(args: argparse.Namespace) -> int:
    import threading

    from .app.demo import DemoPlan, publish_demo

    stop = threading.Event()
    plan = DemoPlan(rate=args.rate, max_events=args.events, drift_after=args.drift_after)

    def show(n: int) -> None:
        if n % 1000 == 0:
            print(f"\rdemo: {n:,} production events per model", end="", file=sys.stderr, flush=True)

    from confluent_kafka import KafkaException

    try:
        acked = publish_demo(args.bootstrap_servers, args.topic, stop, plan, labels_topic=args.ground_truth_topic,
                             progress=show, client_options=kafka_options(args.kafka_option))
    except KeyboardInterrupt:
        stop.set()
        return 130
    except KafkaException as exc:
        raise UsageError(kafka_error(exc, "--bootstrap-servers and the -X options")) from None
    print(f"\ndemo: {acked:,} events acknowledged", file=sys.stderr)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .kafka.publish import publish_file

    if not Path(args.events).is_file():
        raise UsageError(f"file not found: {args.events}")

    def show(r: Any) -> None:
        print(f"\rpublished {r.sent:,} events, {r.acked:,} acknowledged", end="", file=sys.stderr, flush=True)

    from confluent_kafka import KafkaException

    try:
        res = publish_file(args.events, args.bootstrap_servers, args.topic, progress=show,
                           client_options=kafka_options(args.kafka_option))
    except KafkaException as exc:
        raise UsageError(kafka_error(exc, "--bootstrap-servers and the -X options")) from None
    print(f"\n{res.sent:,} sent, {res.acked:,} acknowledged, {res.failed:,} failed", file=sys.stderr)
    return 0 if res.failed == 0 and res.acked == res.sent else 1


def kafka_error(exc: BaseException, what: str) -> str:
    """One line for a KafkaException: librdkafka's reason and what to check."""
    reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
    return f"Kafka: {reason.splitlines()[0] if reason else exc}; check {what} (security.protocol, sasl.*, ssl.*)"


def kafka_options(pairs: Sequence[str] | None) -> dict[str, str]:
    """``-X KEY=VALUE`` librdkafka options (security.protocol, sasl.*, ssl.*) as a dict."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-X {pair!r}: give a librdkafka option as KEY=VALUE, e.g. -X security.protocol=SSL")
        out[key.strip()] = value
    return out


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlpmon", description="Streaming drift monitor for NLP models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("schema", help="print the JSON Schema of prediction events")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("replay", help="backtest historical events (JSONL or JSONL.gz)")
    p.add_argument("events", help="events file, one JSON event per line")
    p.add_argument("--reference", action="append", metavar="FILE",
                   help="reference events file or saved profile (repeatable); default: auto-baseline")
    p.add_argument("--report", metavar="REPORT.json", help="write the full report here")
    p.add_argument("--ground-truth", metavar="LABELS.jsonl",
                   help="ground-truth events (docs/events.md): adds span precision/recall/F1 per model")
    p.add_argument("--false-alarm-rate", type=float, help="alarms per signal per stationary event (1e-6)")
    p.add_argument("--config", metavar="FILE", help="YAML file with monitor settings (and a quality: section)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("run", help="run the service (embedded broker when no bootstrap servers are set)")
    p.add_argument("--bootstrap-servers", help="Kafka HOST:PORT[,...] (env NLPMON_BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", help="topic of prediction events (env NLPMON_TOPIC)")
    p.add_argument("--group-id", help="consumer group (env NLPMON_GROUP_ID)")
    p.add_argument("--port", type=int, help="HTTP port for /metrics, /healthz, /readyz, /models (9308)")
    p.add_argument("--host", help="HTTP bind address (127.0.0.1)")
    p.add_argument("--web-config-file", metavar="FILE",
                   help="TLS and basic auth for every endpoint, Prometheus web config format "
                        "(env NLPMON_WEB_CONFIG_FILE; docs/deployment.md)")
    p.add_argument("--reference", action="append", metavar="FILE", help="reference events or profile")
    p.add_argument("--processes", metavar="N",
                   help="group members to run from this command, or auto (= cores); one /metrics and one set "
                        "of pages on --port (env NLPMON_PROCESSES; default 1)")
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--demo", action="store_true", help="also publish drifting synthetic demo traffic")
    p.add_argument("--demo-rate", type=float, default=200.0, help="demo events/s per model")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="publish drifting synthetic NER traffic to a topic")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", default="nlpmon.predictions")
    p.add_argument("--rate", type=float, default=200.0, help="production events/s per model")
    p.add_argument("--events", type=int, default=200_000, help="production events per model")
    p.add_argument("--drift-after", type=int, default=4000, help="ner-news drifts after this many events")
    p.add_argument("--ground-truth-topic", help="also publish late ground-truth events for 30%% of them here")
    p.add_argument("-X", "--kafka-option", action="append", metavar="KEY=VALUE",
                   help="librdkafka option of the producer, e.g. -X security.protocol=SASL_SSL (repeatable)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("publish", help="publish a JSONL[.gz] file of events, keyed by model")
    p.add_argument("events")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", default="nlpmon.predictions")
    p.add_argument("-X", "--kafka-option", action="append", metavar="KEY=VALUE",
                   help="librdkafka option of the producer, e.g. -X security.protocol=SASL_SSL (repeatable)")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("calibrate", help="calibrate reference profiles once and save them")
    p.add_argument("reference", help="reference events file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for one profile per model")
    p.add_argument("--false-alarm-rate", type=float)
    p.add_argument("--config", metavar="FILE")
    p.set_defaults(func=_cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    from threadpoolctl import threadpool_limits

    # nlpmon works on one core by design (vectorised per batch); BLAS threads only contend with it
    try:
        with threadpool_limits(limits=1):
            return int(args.func(args))
    except UserError as exc:  # anything else is a bug: its traceback, exit 1
        print(f"nlpmon: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
