"""Runtime settings from ``FETALHC_*`` environment variables, with safe defaults (pydantic-settings).

Every variable is a typed field: numbers must be numbers of the right kind (``FETALHC_BATCH_SIZE=8.5``
is refused, not rounded), choices are ``StrEnum``s, secrets are ``SecretStr`` (never in a repr or a
log). A value that cannot be used stops the process at start with a ``ConfigError`` naming the
variable and what it may be. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError
from worker.core.peers import parse_allowed_callers, parse_dimse_url


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "fetalhc"


class Device(StrEnum):
    """Where the network runs (``FETALHC_DEVICE``): a GPU when there is one, or as named."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class BackendName(StrEnum):
    """The network's inference backend (``FETALHC_BACKEND``; models.segmentation.backends.Backend)."""

    AUTO = "auto"  # OpenVINO on CPU when installed, else ONNX Runtime when installed, else torch; torch on CUDA
    TORCH = "torch"
    OPENVINO = "openvino"
    ONNXRUNTIME = "onnxruntime"


class PrecisionName(StrEnum):
    """The network's arithmetic (``FETALHC_PRECISION``; models.segmentation.backends.Precision)."""

    AUTO = "auto"  # bf16 for OpenVINO on a CPU with native bfloat16 (AMX / AVX512-BF16), else f32
    F32 = "f32"  # float32: the torch network's HC within 0.005 mm on the HC18 validation split
    BF16 = "bf16"  # bfloat16 (OpenVINO; torch autocast): HC within 0.04 mm there, forward pass about 1.6 x faster


class GrowthStandardName(StrEnum):
    """The fetal growth standard HC is read against (``FETALHC_GROWTH_STANDARD``; models.growth.Standard)."""

    INTERGROWTH = "intergrowth"
    WHO = "who"


class AcceptOther(StrEnum):
    """What the listener does with non-ultrasound instances (``FETALHC_ACCEPT_OTHER``)."""

    IGNORE = "ignore"  # answered Success, dropped
    REFUSE = "refuse"  # refused at association negotiation


class LogFormat(StrEnum):
    """``FETALHC_LOG_FORMAT``: human text, or one JSON object per line."""

    TEXT = "text"
    JSON = "json"


def _env(name: str, default: Any = None, *, factory: Any = None, secret: bool = False) -> Any:
    """The field read from ``FETALHC_<name>`` (exactly that name), with its default or default factory."""
    extra = {"secret": True} if secret else None
    if factory is not None:
        return Field(default_factory=factory, validation_alias=f"FETALHC_{name}", json_schema_extra=extra)
    return Field(default=default, validation_alias=f"FETALHC_{name}", json_schema_extra=extra)


class Settings(BaseSettings):
    """Everything configurable, read once per process.

    Variables (prefix ``FETALHC_``): ``DATABASE_URL`` (default: an SQLite file under
    ``$XDG_DATA_HOME/fetalhc``), ``BROKER_URL`` (redis://localhost:6379/0), ``WEIGHTS`` (the
    shipped model), ``DEVICE`` (auto | cpu | cuda), ``BACKEND`` (auto | torch | openvino | onnxruntime:
    the network's inference backend; auto: OpenVINO on CPU when installed, else ONNX Runtime, else torch;
    torch on CUDA; the ONNX export is derived from the weights and cached by model version), ``PRECISION``
    (auto | f32 | bf16: the network's arithmetic; auto: bf16 for OpenVINO on a CPU with native bfloat16, else f32), ``SPOOL_DIR``, ``API_TOKEN``, ``API_TOKENS_FILE`` (named tokens, one
    ``name sha256hex`` line each: reviewers; ``fetalhc token add NAME``),
    ``GROWTH_STANDARD`` (intergrowth | who), ``BATCH_SIZE`` (scans per forward pass),
    ``TASK_TIME_LIMIT`` (seconds), ``MAX_ATTEMPTS`` (deliveries before a scan is called poison),
    ``MAX_FRAMES`` (16: a cine without (0028,6010) Representative Frame Number and more frames than
    this is measured on that many evenly spaced frames, first and last included; 0 measures every frame).
    ``HEAD_PLANE_GATE`` (on | off | a gate file; on: the shipped ``models/weights/head_plane_gate.pt``):
    only images the head-plane gate takes for a fetal head biometry plane are measured, the others
    are set aside as ``not_head``; ``HEAD_PLANE_THRESHOLD`` (0..1; unset: the gate's own operating
    point) overrides the probability an image needs to pass. ``PLANE_CLASSIFIER`` (unset: off; the path of
    SonoNet-16's ``SonoNet16.npz``, from its authors' repository): a standard-plane label on every frame read
    and the plane decision's classifier evidence; a missing, wrong or damaged file stops measuring.
    Ingest and backfill: ``AE_TITLE`` (FETALHC), ``LISTEN_HOST`` (0.0.0.0), ``LISTEN_PORT`` (11112),
    ``ACCEPT_OTHER`` (ignore | refuse: non-ultrasound instances answered Success and dropped, or
    refused at association negotiation), ``WATCH_SETTLE`` (seconds a dropped file must stay
    unchanged), ``BACKFILL_MAX_IN_FLIGHT`` (backfill jobs received/queued/running at once).
    Hostile or broken input: ``MAX_SCAN_MB`` (1024: the most memory decoding one scan may hold at once,
    from its declared size; more is failed as ``over_memory_budget``), ``MAX_INSTANCE_MB`` (2048: the
    largest instance taken in by any path; a bigger one is aborted or refused, and no PDU may be longer),
    ``MAX_ASSOCIATIONS`` (64 at once), ``MAX_ASSOCIATIONS_PER_ADDRESS`` (8 connections one client address may
    hold open, those still sending their request included), ``ASSOCIATE_TIMEOUT`` (10 s: the whole A-ASSOCIATE-RQ
    must arrive within it), ``DICOM_TIMEOUT`` (30 s: ACSE, DIMSE and network idle timeout, so silent peers are dropped),
    ``ALLOWED_CALLERS`` (unset: anyone; else a comma-separated list of calling AE titles and/or client
    networks in CIDR notation, ``SCANNER1,10.2.0.0/16``; an association must match an AE title when
    any is listed and a network when any is listed, else it is rejected).
    Reliability and operations: ``SWEEP_INTERVAL`` (seconds between the worker's sweeps for stuck
    jobs, 60; 0 disables), ``STALE_AFTER`` (seconds a job may sit received/queued/running before a
    sweep sends it again; default 2 x TASK_TIME_LIMIT + 120), ``METRICS_PORT`` (the worker's
    Prometheus endpoint, 9808; 0 disables), ``LOG_FORMAT`` (text | json), ``TORCH_THREADS`` (CPU
    threads per worker process; 0: the cores divided by the worker's concurrency).
    DICOM SR of each measured or needs_review scan (both off by default): ``SR_DIR`` (keep every SR
    file there), ``SR_DESTINATION`` (``dimse://AETITLE@host:port``: C-STORE each SR there as
    ``AE_TITLE``; an SR that could not be sent stays in ``SR_DIR``, else in ``SPOOL_DIR``/sr).
    ``SPOOL_RETENTION_DAYS`` (0: keep for ever): the sweep deletes spool files of jobs finished
    longer ago than this, and older orphans (``worker.ops.spool_retention``).
    DICOMweb backfill sources that need credentials: ``DICOMWEB_USER`` and ``DICOMWEB_PASSWORD``
    (HTTP basic) or ``DICOMWEB_TOKEN`` (a bearer token), and ``DICOMWEB_CA_BUNDLE`` (a PEM file of
    the CA certificates to trust for https; default: the system's). Secrets (``SecretStr``) never appear in a repr.
    """

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, validate_by_name=True, validate_by_alias=True,
                                      extra="forbid", env_ignore_empty=True, validate_default=True)

    database_url: str = _env("DATABASE_URL", factory=lambda: f"sqlite:///{_data_home() / 'fetalhc.db'}")
    broker_url: str = _env("BROKER_URL", "redis://localhost:6379/0")
    weights: str | None = _env("WEIGHTS")
    device: Device = _env("DEVICE", Device.AUTO)
    backend: BackendName = _env("BACKEND", BackendName.AUTO)
    precision: PrecisionName = _env("PRECISION", PrecisionName.AUTO)
    spool_dir: Path = _env("SPOOL_DIR", factory=lambda: _data_home() / "spool")
    api_token: SecretStr | None = _env("API_TOKEN", secret=True)
    api_header_timeout_s: float = _env("API_HEADER_TIMEOUT", 10.0)
    api_max_connections_per_address: int = _env("API_MAX_CONNECTIONS_PER_ADDRESS", 32)
    api_tokens_file: Path | None = _env("API_TOKENS_FILE")  # named tokens: ``name sha256hex`` lines (worker.core.tokens)
    growth_standard: GrowthStandardName = _env("GROWTH_STANDARD", GrowthStandardName.INTERGROWTH)
    batch_size: int = _env("BATCH_SIZE", 8)
    task_time_limit_s: float = _env("TASK_TIME_LIMIT", 300.0)
    max_attempts: int = _env("MAX_ATTEMPTS", 10)
    max_frames: int = _env("MAX_FRAMES", 16)
    head_plane_gate: str = _env("HEAD_PLANE_GATE", "on")
    head_plane_threshold: float | None = _env("HEAD_PLANE_THRESHOLD")
    plane_classifier: Path | None = _env("PLANE_CLASSIFIER")  # SonoNet16.npz (models.plane.sononet); unset: off
    # SonoNet-16's arithmetic: f32 by default (bf16 moves near-tie labels and so some decisions; README)
    plane_classifier_precision: PrecisionName = _env("PLANE_CLASSIFIER_PRECISION", PrecisionName.F32)
    ae_title: str = _env("AE_TITLE", "FETALHC")
    listen_host: str = _env("LISTEN_HOST", "0.0.0.0")
    listen_port: int = _env("LISTEN_PORT", 11112)
    accept_other: AcceptOther = _env("ACCEPT_OTHER", AcceptOther.IGNORE)
    watch_settle_s: float = _env("WATCH_SETTLE", 5.0)
    max_scan_mb: float = _env("MAX_SCAN_MB", 1024.0)
    max_instance_mb: float = _env("MAX_INSTANCE_MB", 2048.0)
    max_associations: int = _env("MAX_ASSOCIATIONS", 64)
    max_associations_per_address: int = _env("MAX_ASSOCIATIONS_PER_ADDRESS", 8)
    associate_timeout_s: float = _env("ASSOCIATE_TIMEOUT", 10.0)
    dicom_timeout_s: float = _env("DICOM_TIMEOUT", 30.0)
    allowed_callers: str = _env("ALLOWED_CALLERS", "")
    backfill_max_in_flight: int = _env("BACKFILL_MAX_IN_FLIGHT", 32)
    sweep_interval_s: float = _env("SWEEP_INTERVAL", 60.0)
    stale_after_s: float = _env("STALE_AFTER", 0.0)
    metrics_port: int = _env("METRICS_PORT", 9808)
    log_format: LogFormat = _env("LOG_FORMAT", LogFormat.TEXT)
    torch_threads: int = _env("TORCH_THREADS", 0)
    sr_dir: Path | None = _env("SR_DIR")
    sr_destination: str | None = _env("SR_DESTINATION")
    spool_retention_days: float = _env("SPOOL_RETENTION_DAYS", 0.0)
    dicomweb_user: str | None = _env("DICOMWEB_USER")
    dicomweb_password: SecretStr | None = _env("DICOMWEB_PASSWORD", secret=True)
    dicomweb_token: SecretStr | None = _env("DICOMWEB_TOKEN", secret=True)
    dicomweb_ca_bundle: Path | None = _env("DICOMWEB_CA_BUNDLE")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """``{FETALHC_NAME: field name}`` for every setting."""
        return {str(f.validation_alias): name for name, f in cls.model_fields.items()}

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names) laid over, validated again like the environment's values."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: Any) -> Any:
        """An empty or blank value is the default (as an unset variable); other strings lose outer blanks."""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("head_plane_gate")
    @classmethod
    def _gate(cls, value: str) -> str:
        if value.lower() in ("on", "off"):
            return value.lower()
        if not Path(value).is_file():
            raise ValueError(f"FETALHC_HEAD_PLANE_GATE={value!r}; choose one of: on, off, or the path of a gate file")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        """The rules between and within values that types alone do not say."""
        if self.batch_size < 1:
            raise ValueError("FETALHC_BATCH_SIZE must be at least 1")
        if self.max_frames < 0:
            raise ValueError(f"FETALHC_MAX_FRAMES={self.max_frames}: frames measured per cine, at least 1 "
                             "(0: every frame)")
        if self.head_plane_threshold is not None and not 0.0 <= self.head_plane_threshold <= 1.0:
            raise ValueError(f"FETALHC_HEAD_PLANE_THRESHOLD={self.head_plane_threshold}: a probability from 0 to 1 "
                             "(unset: the gate's own threshold)")
        if not (self.max_scan_mb > 0 and self.max_instance_mb > 0 and self.dicom_timeout_s > 0):  # refuses nan too
            raise ValueError("FETALHC_MAX_SCAN_MB, FETALHC_MAX_INSTANCE_MB and FETALHC_DICOM_TIMEOUT must be above 0")
        if self.max_associations < 1 or self.max_associations_per_address < 1:
            raise ValueError("FETALHC_MAX_ASSOCIATIONS and FETALHC_MAX_ASSOCIATIONS_PER_ADDRESS must be at least 1")
        if not self.associate_timeout_s > 0:  # refuses nan too
            raise ValueError("FETALHC_ASSOCIATE_TIMEOUT must be above 0")
        if not self.api_header_timeout_s > 0 or self.api_max_connections_per_address < 1:
            raise ValueError("FETALHC_API_HEADER_TIMEOUT must be above 0 and FETALHC_API_MAX_CONNECTIONS_PER_ADDRESS "
                             "at least 1")
        if self.allowed_callers:  # FETALHC_ALLOWED_CALLERS: checked now, not at the first association
            parse_allowed_callers(self.allowed_callers)
        if not 0 < len(self.ae_title) <= 16:
            raise ValueError(f"FETALHC_AE_TITLE={self.ae_title!r}: an AE title has 1 to 16 characters")
        if not 0 < self.listen_port < 65536:
            raise ValueError(f"FETALHC_LISTEN_PORT={self.listen_port} is not a TCP port (1-65535)")
        if self.backfill_max_in_flight < 1:
            raise ValueError("FETALHC_BACKFILL_MAX_IN_FLIGHT must be at least 1")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError(f"FETALHC_METRICS_PORT={self.metrics_port} is not a TCP port (0 disables)")
        if not (self.sweep_interval_s >= 0 and self.stale_after_s >= 0 and self.torch_threads >= 0):
            raise ValueError("FETALHC_SWEEP_INTERVAL, FETALHC_STALE_AFTER and FETALHC_TORCH_THREADS cannot be negative")
        if not (self.task_time_limit_s > 0 and self.watch_settle_s >= 0):  # refuses nan too
            raise ValueError("FETALHC_TASK_TIME_LIMIT must be above 0 and FETALHC_WATCH_SETTLE at least 0")
        if self.max_attempts < 1:
            raise ValueError("FETALHC_MAX_ATTEMPTS must be at least 1")
        if not 0 <= self.spool_retention_days < 1e6:  # also refuses nan and inf
            raise ValueError(f"FETALHC_SPOOL_RETENTION_DAYS={self.spool_retention_days}: days a finished scan's "
                             "spool file is kept, at least 0 (0: kept for ever)")
        if bool(self.dicomweb_user) != bool(self.dicomweb_password):
            raise ValueError("FETALHC_DICOMWEB_USER and FETALHC_DICOMWEB_PASSWORD go together: set both or neither")
        if self.dicomweb_token and self.dicomweb_user:
            raise ValueError("set FETALHC_DICOMWEB_TOKEN or FETALHC_DICOMWEB_USER/PASSWORD, not both")
        if self.dicomweb_ca_bundle is not None and not self.dicomweb_ca_bundle.is_file():
            raise ValueError(f"FETALHC_DICOMWEB_CA_BUNDLE={self.dicomweb_ca_bundle} is not a file")
        if self.sr_destination:  # FETALHC_SR_DESTINATION: checked now, not at the first report
            parse_dimse_url(self.sr_destination)
        if not self.stale_after_s:  # longer than one task plus a retry's backoff plus a wait for a free process
            object.__setattr__(self, "stale_after_s", 2 * self.task_time_limit_s + 120.0)
        return self


def _describe(exc: ValidationError) -> str:
    """One line per refused value: the variable, what was given (never a secret) and what it may be."""
    lines = []
    for error in exc.errors(include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        if error["type"] == "value_error" and isinstance(cause, Exception):  # our own rule: its message says it all
            lines.append(str(cause))
            continue
        name = str(error["loc"][0]) if error["loc"] else ""
        field = _field(name)
        given = "" if field is None or _is_secret(field) else f"={error.get('input')!r}"
        message = error["msg"][0].lower() + error["msg"][1:]
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, StrEnum):
            message = "choose one of: " + ", ".join(m.value for m in annotation)
        lines.append(f"{name}{given}: {message}" if name else message)
    return "; ".join(lines)


def _field(name: str) -> FieldInfo | None:
    names = Settings.env_names()
    return Settings.model_fields.get(names.get(name, name))


def _is_secret(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra.get("secret"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
