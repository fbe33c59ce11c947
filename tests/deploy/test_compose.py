"""Static checks of the container deployment (no Docker engine needed): docker-compose.yml, deploy/Dockerfile,
.dockerignore, and their agreement with the service's settings, the CLI and the Prometheus configuration.

The image's health check command is run for real against an ObservabilityServer on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from nlpmon.app.settings import ServiceSettings, load_settings
from nlpmon.cli import build_parser
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.observability.http import ObservabilityServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SERVICES = {"kafka", "nlpmon", "prometheus", "alertmanager", "grafana", "demo"}
DEFAULT_PORT = ServiceSettings.model_fields["port"].default


# --- helpers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc = compose["services"][name]
    assert isinstance(svc, dict), name
    return svc


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container target) of every volume entry, short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            out.append((parts[0], parts[1]))
        else:
            out.append((str(v["source"]), str(v["target"])))
    return out


def _binds(svc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(src, dst) for src, dst in _mounts(svc) if src.startswith((".", "/"))]


def _container_ports(svc: dict[str, Any]) -> set[int]:
    ports = set()
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            ports.add(int(p["target"]))
        else:
            ports.add(int(str(p).split(":")[-1].split("/")[0]))
    return ports


def _host_path(svc: dict[str, Any], container_path: str) -> Path | None:
    """The repository path that a bind mount of ``svc`` shows at ``container_path`` (longest mount wins)."""
    best: tuple[int, Path] | None = None
    target = PurePosixPath(container_path)
    for src, dst in _binds(svc):
        d = PurePosixPath(dst)
        if target == d or d in target.parents:
            rel = target.relative_to(d)
            if best is None or len(d.parts) > best[0]:
                best = (len(d.parts), (ROOT / src / rel).resolve())
    return best[1] if best else None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out = []
    for line in logical:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instrs = _dockerfile_instructions()
    last_from = max(i for i, (k, _) in enumerate(instrs) if k == "FROM")
    return instrs[last_from:]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def _healthcheck_cmd(args: str) -> list[str]:
    """The command of a Dockerfile HEALTHCHECK line (options stripped), exec form."""
    _, sep, cmd = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    return _exec_form(cmd.strip())


def _compose_healthcheck_cmd(svc: dict[str, Any]) -> list[str]:
    test = svc["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}, test
    return test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]


# --- the compose file --------------------------------------------------------------------------------------
def test_compose_parses_with_the_expected_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert _service(compose, "demo").get("profiles") == ["demo"]
    for name in SERVICES - {"demo"}:
        assert "profiles" not in _service(compose, name), f"{name} must start with a plain `docker compose up`"


def _compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or the standalone ``docker-compose``; None when neither works."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=20)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


def test_docker_compose_config_validates() -> None:
    """Docker's own reading of the file (`config` needs no engine, only the compose plugin). Where there is
    no compose at all this skips, even under CI: the tests below parse and cross-check the same file
    without Docker (services, images, ports, mounts, environment against docs/configuration.md, health
    checks, depends_on), so what only this test sees is Compose's schema itself."""
    compose = _compose_command()
    if compose is None:
        pytest.skip("no Docker Compose here (neither the `docker compose` plugin nor `docker-compose`); "
                    "the file's structure is checked by the other tests of this module")
    for extra in ([], ["--profile", "demo"]):
        res = subprocess.run([*compose, "-f", str(COMPOSE_FILE), *extra, "config", "-q"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr


_DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
_DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):  # the short form: started
        return {str(d): "service_started" for d in deps}
    return {str(k): str((v or {}).get("condition", "service_started")) for k, v in deps.items()}


def _has_healthcheck(compose: dict[str, Any], name: str) -> bool:
    svc = _service(compose, name)
    check = svc.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    # no compose health check: the image's own (only ours is built here)
    return "build" in svc and any(k == "HEALTHCHECK" for k, _ in _final_stage())


def test_every_service_has_a_pinned_image_and_valid_unique_ports(compose: dict[str, Any]) -> None:
    host_ports: dict[int, str] = {}
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image or "build" in svc, f"{name}: neither image nor build"
        if "build" not in svc:
            repo, sep, tag = str(image).rpartition(":")
            assert sep and repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned to a tag"
        for p in svc.get("ports") or []:
            assert isinstance(p, str) and re.fullmatch(r"(\d+):(\d+)(/tcp|/udp)?", p), f"{name}: port {p!r}"
            host, container = (int(x) for x in p.split("/")[0].split(":"))
            assert 0 < host < 65536 and 0 < container < 65536, f"{name}: port {p!r}"
            assert host not in host_ports, f"host port {host} of {name} is already {host_ports[host]}'s"
            host_ports[host] = name
    header = re.search(r"Ports on the host: (.*)", COMPOSE_FILE.read_text())
    assert header, "the file's header lists the host ports"
    said = {int(port): name.lower() for port, name in re.findall(r"(\d+) (\w+)", header.group(1))}
    assert said == host_ports


def test_depends_on_names_services_with_the_health_checks_it_waits_for(compose: dict[str, Any]) -> None:
    seen = 0
    for name, svc in compose["services"].items():
        for dep, condition in _depends_on(svc).items():
            seen += 1
            assert dep in compose["services"] and dep != name, f"{name} depends on unknown service {dep!r}"
            assert condition in _DEPENDS_CONDITIONS, f"{name} -> {dep}: condition {condition!r}"
            if condition == "service_healthy":
                assert _has_healthcheck(compose, dep), f"{name} waits for {dep} to be healthy; it has no check"
            if "profiles" not in svc:
                assert "profiles" not in _service(compose, dep), f"{name} (always on) needs {dep} (a profile)"
    assert seen >= 5


def test_health_checks_are_well_formed(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck")
        if name == "demo":
            assert check == {"disable": True}
            continue
        assert check is not None, f"{name} has no health check"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) >= 2, (name, test)
        if test[0] == "CMD-SHELL":
            assert len(test) == 2 and isinstance(test[1], str), (name, test)
        for key in ("interval", "timeout", "start_period"):
            if key in check:
                assert _DURATION.fullmatch(str(check[key])), f"{name}: {key}={check[key]!r}"
        assert int(check.get("retries", 3)) >= 1, name
        assert svc.get("restart") in {"unless-stopped", "always", "on-failure"}, f"{name}: restart policy"


def test_nlpmon_environment_is_documented_in_configuration_md(compose: dict[str, Any]) -> None:
    """Every NLPMON_* variable the stack sets (and the commented-out example) is a documented setting."""
    documented = set(re.findall(r"`(NLPMON_[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
    assert documented, "docs/configuration.md lists no environment variable"
    used = {k for svc in compose["services"].values() for k in _env(svc) if k.startswith("NLPMON_")}
    used |= set(re.findall(r"#\s*(NLPMON_[A-Z0-9_]+):", COMPOSE_FILE.read_text()))
    assert "NLPMON_BOOTSTRAP_SERVERS" in used and "NLPMON_REFERENCE" in used
    assert used <= documented, f"set in docker-compose.yml but not in docs/configuration.md: {used - documented}"


def test_named_volumes_are_all_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {src for svc in compose["services"].values() for src, _ in _mounts(svc) if not src.startswith((".", "/"))}
    assert declared == used, declared ^ used


def test_every_bind_mounted_path_exists(compose: dict[str, Any]) -> None:
    missing = [f"{name}: {src}" for name, svc in compose["services"].items() for src, _ in _binds(svc)
               if not (ROOT / src).exists()]
    assert not missing, f"bind-mounted paths missing from the repository: {missing}"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {src for svc in compose["services"].values() for src, _ in _mounts(svc) if not src.startswith((".", "/"))}
    assert used <= declared, used - declared


def test_kafka_is_a_single_kraft_node_reachable_as_kafka_9092(compose: dict[str, Any]) -> None:
    kafka = _service(compose, "kafka")
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(re.findall(r"(\w+)://[^:,]*:(\d+)", env["KAFKA_LISTENERS"]))
    advertised = dict(re.findall(r"(\w+)://([^,]+)", env["KAFKA_ADVERTISED_LISTENERS"]))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{listeners[controller]}"
    assert controller not in advertised, "the controller listener is not for clients"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[internal] == "kafka:9092" and listeners[internal] == "9092"
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1, "one broker: one replica"
    # Snapshot chunks must fit in a message (service/kafka/state_store.py).
    chunk = KafkaSettings.model_fields["snapshot_chunk_bytes"].default
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) > chunk
    assert "kafka-broker-api-versions.sh" in " ".join(_compose_healthcheck_cmd(kafka))
    assert any(dst == env["KAFKA_LOG_DIRS"] for _, dst in _mounts(kafka)), "the log dir is on a volume"


def test_nlpmon_service_settings_load_and_match_the_image(compose: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service(compose, "nlpmon")
    build = svc["build"]
    assert build["context"] == "." and (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    env = _env(svc)
    fields = set(ServiceSettings.model_fields)
    for key in env:
        assert key.startswith("NLPMON_") and key[len("NLPMON_"):].lower().split("__")[0] in fields, key
    for key in [k for k in os.environ if k.startswith("NLPMON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the web config the stack mounts from deploy/web (make certs): made here by the same script
    web_in_container = PurePosixPath(env["NLPMON_WEB_CONFIG_FILE"])
    host = _host_path(svc, str(web_in_container))
    assert host is not None and host.parent == ROOT / "deploy" / "web", "deploy/web is mounted"
    made = subprocess.run(["bash", str(ROOT / "scripts" / "make-web-certs.sh"), str(tmp_path / "web"),
                           sys.executable], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    monkeypatch.setenv("NLPMON_WEB_CONFIG_FILE", str(tmp_path / "web" / host.name))
    settings = load_settings()
    web = settings.web_config()
    assert web is not None and web.tls is not None and list(web.users) == ["prometheus"]
    assert settings.open_healthz, "the container's probe reaches /healthz without the password"
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.host == "0.0.0.0"
    assert _container_ports(svc) == {settings.port} == {DEFAULT_PORT}
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert any("/healthz" in part for part in _compose_healthcheck_cmd(svc))


def test_demo_runs_nlpmon_demo_against_the_same_kafka_and_topic(compose: dict[str, Any]) -> None:
    demo, nlpmon = _service(compose, "demo"), _service(compose, "nlpmon")
    assert demo["image"] == nlpmon["image"] and demo["build"] == nlpmon["build"]
    entrypoint = _exec_form(next(a for k, a in _final_stage() if k == "ENTRYPOINT"))
    argv = [*entrypoint, *demo["command"]]
    assert argv[:2] == ["nlpmon", "demo"]
    args = build_parser().parse_args(argv[1:])
    assert args.command == "demo"
    assert args.bootstrap_servers == _env(nlpmon)["NLPMON_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert args.topic == _env(nlpmon)["NLPMON_TOPIC"]
    assert demo["healthcheck"] == {"disable": True}, "the demo serves no /healthz"
    assert demo["depends_on"]["nlpmon"]["condition"] == "service_healthy", "nlpmon creates the topic first"


def test_monitoring_services_images_ports_and_mounts(compose: dict[str, Any]) -> None:
    prom, am, graf = (_service(compose, n) for n in ("prometheus", "alertmanager", "grafana"))
    assert prom["image"] == "prom/prometheus:v2.42.0" and _container_ports(prom) == {9090}
    assert am["image"] == "prom/alertmanager:v0.25.0" and _container_ports(am) == {9093}
    assert graf["image"].startswith("grafana/grafana:") and _container_ports(graf) == {3000}
    assert ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in _binds(prom)
    assert ("./deploy/prometheus/rules", "/etc/prometheus/rules") in _binds(prom)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert ("./deploy/alertmanager/alertmanager.yml", "/etc/alertmanager/alertmanager.yml") in _binds(am)
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]


def test_prometheus_config_agrees_with_compose(compose: dict[str, Any]) -> None:
    assert PROMETHEUS_CONFIG.is_file(), "deploy/prometheus/prometheus.yml is shipped and mounted: it is missing"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    nlpmon_port = next(iter(_container_ports(_service(compose, "nlpmon"))))
    am_port = next(iter(_container_ports(_service(compose, "alertmanager"))))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = [t for sc in jobs["nlpmon"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"nlpmon:{nlpmon_port}"]
    assert jobs["nlpmon"].get("metrics_path", "/metrics") == "/metrics"
    am_targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                  for t in sc["targets"]]
    assert am_targets == [f"alertmanager:{am_port}"]
    # rule_files are relative to the config file; each must reach a mounted file inside the container.
    prom = _service(compose, "prometheus")
    config_dir = PurePosixPath("/etc/prometheus")
    for pattern in config.get("rule_files") or []:
        in_container = pattern if pattern.startswith("/") else str(config_dir / pattern)
        host = _host_path(prom, in_container)
        assert host is not None, f"rule file {in_container} is not under a mount"
        assert list(host.parent.glob(host.name)), f"{pattern} -> {host}: no file"


# --- the Dockerfile ---------------------------------------------------------------------------------------
def test_dockerfile_runs_nlpmon_run_as_a_non_root_user() -> None:
    instrs = _dockerfile_instructions()
    assert all(a.split()[0] == "python:3.11-slim" for k, a in instrs if k == "FROM")
    final = _final_stage()
    entry = _exec_form(next(a for k, a in final if k == "ENTRYPOINT"))
    cmd = _exec_form(next(a for k, a in final if k == "CMD"))
    assert [*entry, *cmd] == ["nlpmon", "run"]
    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    if not user.isdigit():  # a named user must be created in the final stage
        assert any(k == "RUN" and re.search(rf"useradd\b.*\b{re.escape(user)}\s*($|&&)", a) for k, a in final)
    env = " ".join(a for k, a in final if k == "ENV")
    assert "NLPMON_HOST=0.0.0.0" in env
    assert f"NLPMON_PORT={DEFAULT_PORT}" in env
    assert [a for k, a in final if k == "EXPOSE"] == [str(DEFAULT_PORT)]


def test_dockerfile_installs_the_package_from_its_sources() -> None:
    instrs = _dockerfile_instructions()
    copied = {src.rstrip("/") for k, a in instrs if k == "COPY" and not a.startswith("--from")
              for src in shlex.split(a)[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"].get("readme")
    assert {"pyproject.toml", "service"} <= copied
    if isinstance(readme, str):
        assert readme in copied, "setuptools reads the readme named in pyproject.toml"
    assert any(k == "RUN" and re.search(r"pip install \.(\s|$)", a) for k, a in instrs)
    for src in copied:
        assert (ROOT / src).exists(), src


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nlpmon"] == "nlpmon.cli:main"
    from nlpmon import cli

    assert callable(cli.main)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    for kept in ("pyproject.toml", "README.md", "service/cli.py", "service/py.typed", "service/app/service.py"):
        assert not _ignored(kept, patterns), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/test_cli.py", "benchmarks/x.py",
                    "service/__pycache__/cli.cpython-311.pyc", "nlpmon.egg-info/PKG-INFO", "docker-compose.yml"):
        assert _ignored(dropped, patterns), dropped


# --- the health check, run for real --------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.last_poll: float | None = 1000.0


@pytest.fixture
def health_server() -> Iterator[tuple[_Clock, int]]:
    clock = _Clock()
    server = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=dict, last_poll=lambda: clock.last_poll,
                                 host="127.0.0.1", port=0, liveness_limit_s=60.0, clock=lambda: clock.now)
    server.start()
    try:
        yield clock, server.port
    finally:
        server.stop()


def _run_check(cmd: list[str], port: int) -> int:
    assert cmd[0] == "python"
    env = {**os.environ, "NLPMON_PORT": str(port)}
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=20).returncode


def test_healthchecks_pass_when_live_and_fail_when_stalled_or_down(compose: dict[str, Any],
                                                                    health_server: tuple[_Clock, int]) -> None:
    clock, port = health_server
    image_check = _healthcheck_cmd(next(a for k, a in _final_stage() if k == "HEALTHCHECK"))
    compose_check = _compose_healthcheck_cmd(_service(compose, "nlpmon"))
    for cmd in (image_check, compose_check):
        assert "/healthz" in " ".join(cmd) and f"'{DEFAULT_PORT}'" in " ".join(cmd)
        clock.now = clock.last_poll = 1000.0
        assert _run_check(cmd, port) == 0, "live: /healthz 200"
        clock.now = 1000.0 + 61.0
        assert _run_check(cmd, port) != 0, "stalled loop: /healthz 503"
    assert _run_check(image_check, _free_port()) != 0, "nothing listening: connection refused"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
