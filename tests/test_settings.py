"""Settings of `nlpmon run`: precedence flags > environment > YAML > defaults; one-line errors; docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlpmon.app.settings import SettingsError, configuration_markdown, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults() -> None:
    s = load_settings()
    assert s.bootstrap_servers is None and s.topic == "nlpmon.predictions" and s.port == 9308
    assert s.monitor.false_alarm_rate == 1e-6


def test_precedence_flags_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "n.yaml"
    cfg.write_text("topic: from-yaml\nport: 1111\ngroup_id: g-yaml\nmonitor:\n  false_alarm_rate: 0.001\n"
                   "kafka:\n  session_timeout_ms: 6000\n")
    monkeypatch.setenv("NLPMON_PORT", "2222")
    monkeypatch.setenv("NLPMON_GROUP_ID", "g-env")
    monkeypatch.setenv("NLPMON_MONITOR__CALIBRATION_SPLITS", "3")
    s = load_settings(str(cfg), topic=None, group_id="g-flag")
    assert (s.topic, s.port, s.group_id) == ("from-yaml", 2222, "g-flag")
    assert s.monitor.false_alarm_rate == 0.001 and s.monitor.calibration_splits == 3
    ks = s.kafka_settings("127.0.0.1:9092")
    assert ks.session_timeout_ms == 6000 and ks.topic == "from-yaml" and ks.group_id == "g-flag"


@pytest.mark.parametrize("env, message", [
    ({"NLPMON_PORT": "seventy"}, "setting port:"),
    ({"NLPMON_MONITOR__FALSE_ALARM_RATE": "2"}, "setting monitor.false_alarm_rate:"),
    ({"NLPMON_REFERENCE": '["/nope.jsonl"]'}, "reference file not found: /nope.jsonl"),
    ({"NLPMON_SURPRISE": "1"}, None),  # unknown environment variables are ignored, like any process env
])
def test_bad_values_are_one_line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str | None) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if message is None:
        load_settings()
        return
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_yaml_key_and_bad_kafka_entry(tmp_path: Path) -> None:
    cfg = tmp_path / "n.yaml"
    cfg.write_text("topik: typo\n")
    with pytest.raises(SettingsError, match="topik"):
        load_settings(str(cfg))
    cfg.write_text("kafka:\n  batch_size: -1\n")
    with pytest.raises(SettingsError, match=r"kafka\.batch_size"):
        load_settings(str(cfg)).kafka_settings("127.0.0.1:1")
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(str(tmp_path / "missing.yaml"))


def test_configuration_doc_is_generated_from_the_declarations() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_markdown(), \
        "regenerate: python -c 'from nlpmon.app.settings import configuration_markdown as m; print(m(), end=\"\")'"


def test_contradictory_monitor_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPMON_MONITOR__MIN_REFERENCE_EVENTS", "3000")
    with pytest.raises(SettingsError, match="could never be calibrated"):
        load_settings()


def test_processes_setting_takes_a_count_or_auto_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nlpmon.app.settings import MAX_PROCESSES, SettingsError, load_settings

    assert load_settings().process_count() == 1
    assert load_settings(processes=3).process_count() == 3
    assert load_settings(processes="auto").process_count(cores=6) == 6
    assert load_settings(processes="auto").process_count(cores=10_000) == MAX_PROCESSES
    monkeypatch.setenv("NLPMON_PROCESSES", "2")
    assert load_settings().process_count() == 2
    monkeypatch.setenv("NLPMON_PROCESSES", "auto")
    assert load_settings().processes == "auto"
    for bad in (0, MAX_PROCESSES + 1, "many"):
        with pytest.raises(SettingsError, match="setting processes") as err:
            load_settings(processes=bad)
        assert "\n" not in str(err.value)


def test_the_former_one_level_cluster_setting_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``monitor.cluster_level`` (before the ladder of levels) reads as a one-level ``cluster_levels``, from YAML
    and from the environment; both names at once is a one-line error."""
    cfg = tmp_path / "n.yaml"
    cfg.write_text("monitor:\n  cluster_level: 0.04\n")
    assert load_settings(str(cfg)).monitor.cluster_levels == (0.04,)
    monkeypatch.setenv("NLPMON_MONITOR__CLUSTER_LEVEL", "0.03")
    assert load_settings().monitor.cluster_levels == (0.03,)
    cfg.write_text("monitor:\n  cluster_level: 0.04\n  cluster_levels: [0.02]\n")
    monkeypatch.delenv("NLPMON_MONITOR__CLUSTER_LEVEL")
    with pytest.raises(SettingsError, match="cluster_levels only") as err:
        load_settings(str(cfg))
    assert "\n" not in str(err.value)
