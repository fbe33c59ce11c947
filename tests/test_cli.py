"""The command line: replay end to end on files, schema, calibrate, and one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlpmon.cli import main
from nlpmon.demo import generate_events


def write(path: Path, events: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(e) for e in events] + list(extra_lines)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("cli")
    ref = write(d / "ref.jsonl.gz", generate_events(800, seed=2))
    events = generate_events(1600, seed=2, drift_at=1000)
    ev = write(d / "events.jsonl", [*events[:500], {"event_id": "x"}, *events[500:]], ("{broken",))
    cfg = d / "monitor.yaml"
    cfg.write_text("monitor:\n  calibration_splits: 2\n  auto_baseline_events: 400\n")
    return ref, ev, cfg


def test_replay_reports_alarms_invalid_lines_and_summary(files: tuple[Path, Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ref, ev, cfg = files
    report_path = tmp_path / "r.json"
    assert main(["replay", "--reference", str(ref), str(ev), "--report", str(report_path),
                 "--config", str(cfg)]) == 0
    report = json.loads(report_path.read_text())
    assert report["events"] == 1602 and report["invalid"] == 2
    assert {r["event_index"] for r in report["first_invalid"]} == {500, 1601}
    assert report["invalid_reasons"] == {"missing_field": 1, "malformed_json": 1}
    alerts = report["alerts"]
    assert alerts and all(a["event_index"] > 1000 for a in alerts)  # drift at event 1000 (+1 bad line before)
    first = alerts[0]
    assert set(first) >= {"model", "model_version", "signal", "event_index", "event_id", "score", "threshold"}
    lines = ev.read_text().splitlines()
    assert json.loads(lines[first["event_index"]])["event_id"] == first["event_id"]
    model = report["models"]["demo-ner/1"]
    assert model["reference"]["source"] == "reference" and model["signals"]["embedding"]["drift"]
    out = capsys.readouterr().out
    assert "1602 events, 2 invalid" in out and "alarm at event" in out


def test_calibrate_then_replay_with_saved_profile(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ref, ev, cfg = files
    assert main(["calibrate", str(ref), "--out", str(tmp_path), "--config", str(cfg)]) == 0
    profile = next(tmp_path.glob("*.nlpmon"))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    main(["replay", "--reference", str(ref), str(ev), "--report", str(a), "--config", str(cfg)])
    main(["replay", "--reference", str(profile), str(ev), "--report", str(b), "--config", str(cfg)])
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert [x["event_index"] for x in ra["alerts"]] == [x["event_index"] for x in rb["alerts"]]


def test_auto_baseline_when_no_reference(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, ev, cfg = files
    out = tmp_path / "r.json"
    assert main(["replay", str(ev), "--report", str(out), "--config", str(cfg)]) == 0
    model = json.loads(out.read_text())["models"]["demo-ner/1"]
    assert model["reference"]["source"] == "auto-baseline" and model["reference"]["events"] == 400


@pytest.mark.parametrize("argv, message", [
    (["replay", "missing.jsonl"], "file not found: missing.jsonl"),
    (["replay", "{ev}", "--false-alarm-rate", "2"], "bad monitor setting false_alarm_rate"),
    (["replay", "{ev}", "--config", "nope.yaml"], "config file not found"),
])
def test_user_errors_are_one_line(files: tuple[Path, Path, Path], argv: list[str], message: str) -> None:
    _, ev, _ = files
    argv = [a.replace("{ev}", str(ev)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"event_id", "model", "embedding", "entities", "tokens"} <= set(schema["properties"])


def test_replay_with_ground_truth_reports_exact_span_figures(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Labels in their own file, some timestamped before, some long after their predictions, some without a
    time, plus reference labels (they calibrate the estimate) and bad lines: the figures equal the oracle."""
    import random

    from nlpmon.quality.spans import LabelVocab
    from nlpmon.quality.window import scores_from_counts
    from tests.quality.test_spans import oracle

    rng = random.Random(5)
    ref = generate_events(300, seed=4, split="reference", model="ner")
    events = generate_events(900, seed=6, model="ner")
    for i, e in enumerate(ref + events):
        e["event_id"] = f"id-{i}"
    labels, gold = [], {}
    for e in ref + events:
        spans = [(x["start"], x["end"], x["label"]) for x in e["entities"]]
        if rng.random() < 0.3:
            spans = [(s, t, "MISC") for s, t, _ in spans] or [(0, 2, "PERSON")]
        gold[e["event_id"]] = spans
        label: dict = {"event_id": e["event_id"], "model": "ner",
                       "entities": [{"label": lab, "start": s, "end": t} for s, t, lab in spans]}
        roll = rng.random()
        if roll < 0.8:
            label["timestamp"] = e["timestamp"] + rng.uniform(-5, 3600)
        labels.append(label)
    rng.shuffle(labels)
    gt = write(tmp_path / "labels.jsonl.gz", labels, ('{"event_id": "z", "model": "ner"}', "nope"))
    ev = write(tmp_path / "events.jsonl", ref + events)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("monitor:\n  calibration_splits: 2\n  auto_baseline_events: 400\nquality:\n"
                   "  baseline_documents: 300\n  min_test_documents: 100\n")
    out = tmp_path / "r.json"
    assert main(["replay", str(ev), "--ground-truth", str(gt), "--config", str(cfg), "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ground_truth"]["labels"] == 1200 and report["ground_truth"]["invalid"] == 2
    q = report["models"]["ner/1"]["quality"]
    vocab = LabelVocab(names=sorted({s[2] for spans in gold.values() for s in spans} |
                                    {x["label"] for e in events for x in e["entities"]}))
    sums = np.zeros((len(vocab), 3), dtype=np.int64)
    for e in events:
        pred = [(x["start"], x["end"], x["label"]) for x in e["entities"]]
        for lab, counts in oracle(pred, gold[e["event_id"]]).items():
            sums[vocab.id(lab)] += counts
    want = scores_from_counts(sums, vocab.names)
    assert q["labels"] == want["labels"] and q["micro"] == want["micro"] and q["documents"] == 900
    assert q["join"]["matched"] == 1200 and q["reference"]["source"] == "reference"
    assert q["calibrated"] and q["calibration_spans"] > 0 and q["labelled_fraction"] == 1.0
    assert not q["f1_drop"]["drift"]  # the same labelling noise in reference and production
    assert "quality: 900 labelled documents" in capsys.readouterr().out
    assert main(["replay", str(ev), "--ground-truth", str(tmp_path / "missing.jsonl")]) == 2


def test_a_bug_is_a_traceback_and_exit_1(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A ValueError from inside the library is a bug, not a user error: traceback, exit 1 (it used to be one
    line and exit 2, which hid the bug)."""
    _, ev, _ = files
    code = ("import sys, nlpmon.replay as r\n"
            "def boom(*a, **k):\n    raise ValueError('internal bug')\n"
            "r.replay = boom\n"
            "from nlpmon.cli import main\n"
            f"sys.exit(main(['replay', {str(ev)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: internal bug" in proc.stderr


def test_every_user_error_class_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """main catches UserError and nothing else; each error a user can cause and fix subclasses it."""
    import nlpmon.cli as cli
    from nlpmon.app.settings import SettingsError
    from nlpmon.errors import UserError
    from nlpmon.kafka.broker import BrokerError
    from nlpmon.kafka.publish import DeliveryError
    from nlpmon.kafka.runner import CommitError
    from nlpmon.kafka.snapshot_format import SnapshotTooLargeError
    from nlpmon.kafka.state_store import StateRestoreError
    from nlpmon.kafka.topics import TopicSetupError
    from nlpmon.monitor.reference import ReferenceTooSmall
    from nlpmon.observability.http import HttpBindError
    from nlpmon.observability.web_config import WebConfigError
    from nlpmon.state.codec import SnapshotError

    for cls in (SettingsError, WebConfigError, cli.UsageError, TopicSetupError, StateRestoreError, DeliveryError,
                ReferenceTooSmall, BrokerError, CommitError, HttpBindError, SnapshotError, SnapshotTooLargeError):
        assert issubclass(cls, UserError), cls

        def fail(args: object, cls: type[Exception] = cls) -> int:
            raise cls(f"{cls.__name__} happened; do this\nsecond line")

        monkeypatch.setattr(cli, "_cmd_schema", fail)
        assert main(["schema"]) == 2
        err = capsys.readouterr().err
        assert err == f"nlpmon: {cls.__name__} happened; do this\n"


@pytest.mark.parametrize("content, message", [
    ("- a\n- b\n", "must hold a mapping of settings"),
    ("a: [\n", "cannot read settings from"),
    ("port: x\n", "setting port"),
])
def test_bad_settings_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "nlpmon.yaml"
    cfg.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_profile_and_unwritable_report_are_one_line(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, ev, _ = files
    bad = tmp_path / "bad.nlpmon"
    bad.write_bytes(b"NLPMON" + b"\x00" * 40)
    for argv, message in (
        (["replay", str(ev), "--reference", str(bad)], "bad.nlpmon"),
        (["replay", str(ev), "--report", str(tmp_path / "no" / "such" / "dir" / "r.json")], "cannot write the report"),
    ):
        proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", *argv], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr
