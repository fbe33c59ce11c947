"""Settings of ``nlpmon run``: command-line flags > ``NLPMON_*`` environment variables > YAML file > defaults.

Nested keys use ``__`` in environment variables, e.g. ``NLPMON_MONITOR__FALSE_ALARM_RATE=1e-5`` or
``NLPMON_KAFKA__SESSION_TIMEOUT_MS=6000``. Every value is validated; a bad one stops the service with one
line naming the setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from ..errors import UserError
from ..kafka.settings import KafkaSettings
from ..monitor.config import DEFAULT_REDACT_PATTERNS, MonitorConfig, TextPolicy
from ..quality.quality_monitor import QualityConfig

if TYPE_CHECKING:
    from ..observability.web_config import WebConfig


#: The most group members one ``nlpmon run --processes`` starts.
MAX_PROCESSES = 64


class SettingsError(UserError, ValueError):
    """A setting is invalid; the message is one line naming it."""


class PagesConfig(BaseModel):
    """How the model pages are drawn (docs/pages.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    projection: Literal["pca", "umap"] = Field(
        "pca", description="Embedding projection of the model page: pca (the embedding signal's own, free) or "
        "umap (needs the umap extra; fitted per reference on a worker thread, PCA shown until it is ready).")
    umap_neighbors: int = Field(15, ge=2, le=200, description="UMAP n_neighbors (capped at the sample size - 1).")
    umap_max_reference: int = Field(
        2000, ge=10, le=5000, description="Largest reference display sample UMAP is fitted on (larger: PCA, "
        "with a note); see docs/benchmarks.md for the fit cost per size.")
    umap_cached_models: int = Field(
        20, ge=1, le=10000, description="Fitted UMAP maps kept in memory (least recently shown leave first).")
    keep_texts: bool = Field(
        True, description="Keep event texts (cut to monitor.max_text_chars) for the pages, the API and "
        "snapshots. false: no text is kept in memory, pages, API or snapshots; the pages show entity labels "
        "and scores, not words. The dead-letter topic still holds invalid events as sent.")
    redact: bool = Field(
        False, description="Apply redact_patterns to every text before it is kept: each matching character "
        "becomes a block mark (entity offsets stay right).")
    redact_patterns: tuple[str, ...] = Field(
        DEFAULT_REDACT_PATTERNS, description="Regular expressions (Python re) redacted when redact is true: by "
        "default e-mail addresses, phone numbers and runs of 6 or more digits.")

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        TextPolicy(redact=v)  # raises with the pattern that does not compile
        return v

    def text_policy(self) -> TextPolicy:
        """The monitor's text policy these settings ask for."""
        return TextPolicy(keep=self.keep_texts, redact=self.redact_patterns if self.redact else ())


class ServiceSettings(BaseSettings):
    """Everything ``nlpmon run`` needs. See docs/configuration.md for the full list."""

    model_config = SettingsConfigDict(env_prefix="NLPMON_", env_nested_delimiter="__", extra="forbid",
                                      frozen=True)

    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers (HOST:PORT,...). Unset: start the embedded Tansu broker.")
    topic: str = Field("nlpmon.predictions", min_length=1, description="Topic of prediction events.")
    group_id: str = Field("nlpmon", min_length=1, description="Consumer group id.")
    dead_letter_topic: str = Field("nlpmon.dead-letter", min_length=1, description="Where invalid events go.")
    state_topic: str = Field("nlpmon.state", min_length=1, description="Compacted topic of state snapshots.")
    ground_truth_topic: str | None = Field(
        "nlpmon.ground-truth",
        description="Topic of ground-truth (label) events, keyed by model; created with the event topic's "
        "partition count when missing (if kafka.create_missing_topics). Empty string or null: no ground truth.")
    partitions: int = Field(1, ge=1, le=1000, description="Partitions when nlpmon creates the event topic "
                            "(missing, and kafka.create_missing_topics on).")
    host: str = Field("127.0.0.1", description="Address the HTTP server binds (0.0.0.0 in containers).")
    port: int = Field(9308, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz, /models.")
    processes: int | Literal["auto"] = Field(
        1, description="Group members run by this command (child processes of one supervising parent, which "
        "serves the one /metrics and pages on port); auto = the machine's cores. A topic nlpmon creates gets at "
        "least this many partitions. See README, scaling out.")
    web_config_file: Path | None = Field(
        None, description="Web configuration file (the Prometheus exporter-toolkit format: tls_server_config, "
        "basic_auth_users with bcrypt hashes, http_server_config.headers) securing every HTTP endpoint; "
        "unset: plain HTTP, no auth. See docs/deployment.md.")
    open_healthz: bool = Field(
        False, description="With basic auth configured, leave /healthz (only) without auth for orchestrator "
        "probes; it tells only whether the consumer loop polls.")
    reference: tuple[Path, ...] = Field(
        (), description="Reference event files (JSONL[.gz]) or saved profiles; each event's model says whose.")
    liveness_limit_s: float = Field(
        60.0, gt=0, description="/healthz fails when the loop has not polled for this long.")
    calibration_worker: Literal["process", "thread"] = Field(
        "process", description="Where references calibrate beside the consumer loop: process = one worker "
        "process (spawned, on another core; the loop keeps the GIL), thread = one worker thread of this "
        "process (competes with the loop for the GIL: longer poll gaps and scrapes while a reference "
        "calibrates). See docs/benchmarks.md, calibration beside the loop.")
    calibration_nice: int = Field(
        10, ge=0, le=19, description="Niceness added to the calibration worker process (calibration_worker: "
        "process; 0: none). When the cores are contended, the consumer loop, /metrics and the broker run first "
        "and calibrations take the CPU they leave (they take longer); on idle cores it changes nothing.")
    retire_after_s: float = Field(3600.0, gt=0, description="A model silent this long leaves the metrics.")
    max_models: int = Field(50, ge=1, description="Models with their own metric series; the rest go to 'other'.")
    max_labels: int = Field(30, ge=1, description="Labels per model with their own series; the rest: 'other'.")
    progress_interval_s: float = Field(10.0, gt=0, description="Seconds between progress lines on stderr.")
    max_held_mb: float = Field(
        256.0, ge=0, description="Memory budget (MiB) for what is held while references calibrate: each queued "
        "calibration's sample and the events (packed) of models waiting for their calibration; at the budget "
        "consumption pauses until calibrations free half of it (back-pressure: lag grows, memory does not; "
        "nothing is skipped). 0: no budget.")
    monitor: MonitorConfig = Field(MonitorConfig(), description="Drift monitor settings.")
    quality: QualityConfig = Field(QualityConfig(), description="Ground-truth join and quality settings.")
    pages: PagesConfig = Field(PagesConfig(), description="Model page settings.")
    kafka: dict[str, Any] = Field(
        default_factory=dict,
        description="Further consumer-loop settings (nlpmon.kafka.settings.KafkaSettings fields), "
                    "including librdkafka pass-through options under librdkafka_options.")

    @field_validator("reference")
    @classmethod
    def _files_exist(cls, v: tuple[Path, ...]) -> tuple[Path, ...]:
        for p in v:
            if not Path(p).is_file():
                raise ValueError(f"reference file not found: {p}")
        return v

    @field_validator("processes")
    @classmethod
    def _processes_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_PROCESSES:
            raise ValueError(f"give a number of processes from 1 to {MAX_PROCESSES}, or auto")
        return v

    def process_count(self, cores: int | None = None) -> int:
        """The number of group members to run: ``processes``, or ``cores`` (default os.cpu_count()) for auto."""
        if self.processes == "auto":
            import os

            return max(1, min(MAX_PROCESSES, cores if cores is not None else (os.cpu_count() or 1)))
        return int(self.processes)

    @field_validator("web_config_file")
    @classmethod
    def _web_config_valid(cls, v: Path | None) -> Path | None:
        if v is not None:
            from ..observability.web_config import load_web_config

            load_web_config(v)  # a WebConfigError (ValueError) names the key in the file
        return v

    @model_validator(mode="after")
    def _texts_from_pages(self) -> ServiceSettings:
        if self.monitor.texts != TextPolicy():
            raise ValueError("monitor.texts is set from pages.keep_texts, pages.redact and pages.redact_patterns; "
                             "set those instead")
        return self

    def monitor_config(self) -> MonitorConfig:
        """The monitor settings with the text policy of ``pages`` (what every monitor of the service uses)."""
        return self.monitor.model_copy(update={"texts": self.pages.text_policy()})

    def web_config(self) -> WebConfig | None:
        """The parsed web configuration file, or None (plain HTTP, no auth)."""
        from ..observability.web_config import load_web_config

        return None if self.web_config_file is None else load_web_config(self.web_config_file)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags > environment > YAML (the file named by model_config["yaml_file"], see load_settings)
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    def kafka_settings(self, bootstrap_servers: str | None = None) -> KafkaSettings:
        """The consumer-loop settings (raises SettingsError on a bad ``kafka`` entry)."""
        data = {"bootstrap_servers": bootstrap_servers or self.bootstrap_servers, "topic": self.topic,
                "group_id": self.group_id, "dead_letter_topic": self.dead_letter_topic,
                "state_topic": self.state_topic, "ground_truth_topic": self.ground_truth_topic or None,
                **self.kafka}
        for key in ("librdkafka_options", "consumer_options", "producer_options"):
            if isinstance(data.get(key), str):  # from the environment: NLPMON_KAFKA__LIBRDKAFKA_OPTIONS='{...}'
                try:
                    data[key] = json.loads(data[key])
                except ValueError as exc:
                    raise SettingsError(f"setting kafka.{key}: not a JSON object ({exc})") from None
        try:
            return KafkaSettings(**data)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, prefix="kafka.")) from None


def load_settings(config_file: str | None = None, **flags: Any) -> ServiceSettings:
    """Build settings from flags (None = not given), environment and an optional YAML file.

    Raises SettingsError with one line naming the bad setting.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise SettingsError(f"config file not found: {config_file}")
    cls: type[ServiceSettings] = ServiceSettings
    if config_file is not None:
        _check_mapping(config_file)
        cls = type("ServiceSettingsFromFile", (ServiceSettings,),
                   {"model_config": {**ServiceSettings.model_config, "yaml_file": config_file}})
    try:
        return cls(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError) as exc:  # YAML syntax, unreadable file
        raise SettingsError(f"cannot read settings: {exc}".splitlines()[0]) from None


def _check_mapping(config_file: str) -> None:
    """Raise SettingsError unless the YAML file holds a mapping (or nothing)."""
    try:
        loaded = yaml.safe_load(Path(config_file).read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError) as exc:
        raise SettingsError(f"cannot read settings from {config_file}: {exc}".splitlines()[0]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise SettingsError(f"config file {config_file} must hold a mapping of settings (key: value lines)")


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    where = prefix + ".".join(str(x) for x in err["loc"])
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    more = f"; {exc.error_count() - 1} more problem(s)" if exc.error_count() > 1 else ""
    return f"setting {where}: {err['msg']}{shown}{more}"


def configuration_markdown() -> str:
    """docs/configuration.md, generated from the settings declarations (a test keeps the file in sync)."""
    from ..kafka.settings import KafkaSettings

    def rows(model: type[Any], env_prefix: str, yaml_prefix: str) -> list[str]:
        out = []
        for name, f in model.model_fields.items():
            if name in ("monitor", "quality", "kafka", "pages", "texts"):
                continue
            default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg,unused-ignore]
            shown = "unset" if default is None else f"`{default}`"
            out.append(f"| `{yaml_prefix}{name}` | `{env_prefix}{name.upper()}` | {shown} | {f.description or ''} |")
        return out

    lines = [
        "# Configuration of `nlpmon run`",
        "",
        "Precedence: command-line flags > environment variables > the YAML file given with `--config` > "
        "defaults. Nested settings use `__` in environment variables. Generated from the settings "
        "declarations (`service/app/settings.py`, `service/monitor/config.py`, `service/kafka/settings.py`).",
        "",
        "## Service",
        "",
        "| YAML key | environment variable | default | meaning |",
        "|---|---|---|---|",
        *rows(ServiceSettings, "NLPMON_", ""),
        "",
        "## Monitor (`monitor:`)",
        "",
        "| YAML key | environment variable | default | meaning |",
        "|---|---|---|---|",
        *rows(MonitorConfig, "NLPMON_MONITOR__", "monitor."),
        "",
        "## Ground truth and quality (`quality:`)",
        "",
        "| YAML key | environment variable | default | meaning |",
        "|---|---|---|---|",
        *rows(QualityConfig, "NLPMON_QUALITY__", "quality."),
        "",
        "## Model pages (`pages:`)",
        "",
        "| YAML key | environment variable | default | meaning |",
        "|---|---|---|---|",
        *rows(PagesConfig, "NLPMON_PAGES__", "pages."),
        "",
        "## Consumer loop (`kafka:`)",
        "",
        "Topic, group and bootstrap settings come from the service section above.",
        "",
        "| YAML key | environment variable | default | meaning |",
        "|---|---|---|---|",
        *[r for r in rows(KafkaSettings, "NLPMON_KAFKA__", "kafka.")
          if not any(f"`kafka.{k}`" in r for k in ("bootstrap_servers", "topic", "group_id",
                                                      "dead_letter_topic", "state_topic",
                                                      "ground_truth_topic"))],
        "",
        "Example `nlpmon.yaml`:",
        "",
        "```yaml",
        "bootstrap_servers: kafka:9092",
        "topic: predictions",
        "reference: [/data/reference.jsonl.gz]",
        "monitor:",
        "  false_alarm_rate: 1.0e-6",
        "  max_window_age_seconds: 3600",
        "kafka:",
        "  session_timeout_ms: 10000",
        "  librdkafka_options: {security.protocol: SASL_SSL}",
        "```",
        "",
    ]
    return "\n".join(lines)
