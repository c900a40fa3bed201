"""Runtime settings from ``FETALHC_*`` environment variables, with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "fetalhc"


def _env(name: str, default: str) -> str:
    value = os.environ.get(f"FETALHC_{name}", "").strip()
    return value or default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"FETALHC_{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once per process.

    Variables (prefix ``FETALHC_``): ``DATABASE_URL`` (default: an SQLite file under
    ``$XDG_DATA_HOME/fetalhc``), ``BROKER_URL`` (redis://localhost:6379/0), ``WEIGHTS`` (the
    shipped model), ``DEVICE`` (auto | cpu | cuda), ``SPOOL_DIR``, ``API_TOKEN``,
    ``GROWTH_STANDARD`` (intergrowth | who), ``BATCH_SIZE`` (scans per forward pass),
    ``TASK_TIME_LIMIT`` (seconds), ``MAX_ATTEMPTS`` (deliveries before a scan is called poison),
    ``MAX_FRAMES`` (16: a cine without (0028,6010) Representative Frame Number and more frames than
    this is measured on that many evenly spaced frames, first and last included; 0 measures every frame).
    ``HEAD_PLANE_GATE`` (on | off | a gate file; on: the shipped ``models/weights/head_plane_gate.pt``):
    only images the head-plane gate takes for a fetal head biometry plane are measured, the others
    are set aside as ``not_head``; ``HEAD_PLANE_THRESHOLD`` (0..1; unset: the gate's own operating
    point) overrides the probability an image needs to pass.
    Ingest and backfill: ``AE_TITLE`` (FETALHC), ``LISTEN_HOST`` (0.0.0.0), ``LISTEN_PORT`` (11112),
    ``ACCEPT_OTHER`` (ignore | refuse: non-ultrasound instances answered Success and dropped, or
    refused at association negotiation), ``WATCH_SETTLE`` (seconds a dropped file must stay
    unchanged), ``BACKFILL_MAX_IN_FLIGHT`` (backfill jobs received/queued/running at once).
    Hostile or broken input: ``MAX_SCAN_MB`` (1024: the most memory decoding one scan may hold at once,
    from its declared size; more is failed as ``over_memory_budget``), ``MAX_INSTANCE_MB`` (2048: the
    largest instance the listener receives; a bigger one is aborted), ``MAX_ASSOCIATIONS`` (64 at once),
    ``DICOM_TIMEOUT`` (30 s: ACSE, DIMSE and network idle timeout, so silent peers are dropped),
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
    longer ago than this, and older orphans (``worker.spool_retention``).
    DICOMweb backfill sources that need credentials: ``DICOMWEB_USER`` and ``DICOMWEB_PASSWORD``
    (HTTP basic) or ``DICOMWEB_TOKEN`` (a bearer token), and ``DICOMWEB_CA_BUNDLE`` (a PEM file of
    the CA certificates to trust for https; default: the system's). Secrets never appear in a repr.
    """

    database_url: str = field(default_factory=lambda: _env("DATABASE_URL", f"sqlite:///{_data_home() / 'fetalhc.db'}"))
    broker_url: str = field(default_factory=lambda: _env("BROKER_URL", "redis://localhost:6379/0"))
    weights: str | None = field(default_factory=lambda: _env("WEIGHTS", "") or None)
    device: str = field(default_factory=lambda: _env("DEVICE", "auto"))
    spool_dir: Path = field(default_factory=lambda: Path(_env("SPOOL_DIR", str(_data_home() / "spool"))))
    api_token: str | None = field(default_factory=lambda: _env("API_TOKEN", "") or None, repr=False)
    growth_standard: str = field(default_factory=lambda: _env("GROWTH_STANDARD", "intergrowth"))
    batch_size: int = field(default_factory=lambda: int(_env_float("BATCH_SIZE", 8)))
    task_time_limit_s: float = field(default_factory=lambda: _env_float("TASK_TIME_LIMIT", 300.0))
    max_attempts: int = field(default_factory=lambda: int(_env_float("MAX_ATTEMPTS", 10)))
    max_frames: int = field(default_factory=lambda: int(_env_float("MAX_FRAMES", 16)))
    head_plane_gate: str = field(default_factory=lambda: _env("HEAD_PLANE_GATE", "on"))
    head_plane_threshold: float | None = field(
        default_factory=lambda: _env_float("HEAD_PLANE_THRESHOLD", -1.0) if _env("HEAD_PLANE_THRESHOLD", "") else None)
    ae_title: str = field(default_factory=lambda: _env("AE_TITLE", "FETALHC"))
    listen_host: str = field(default_factory=lambda: _env("LISTEN_HOST", "0.0.0.0"))
    listen_port: int = field(default_factory=lambda: int(_env_float("LISTEN_PORT", 11112)))
    accept_other: str = field(default_factory=lambda: _env("ACCEPT_OTHER", "ignore"))
    watch_settle_s: float = field(default_factory=lambda: _env_float("WATCH_SETTLE", 5.0))
    max_scan_mb: float = field(default_factory=lambda: _env_float("MAX_SCAN_MB", 1024.0))
    max_instance_mb: float = field(default_factory=lambda: _env_float("MAX_INSTANCE_MB", 2048.0))
    max_associations: int = field(default_factory=lambda: int(_env_float("MAX_ASSOCIATIONS", 64)))
    dicom_timeout_s: float = field(default_factory=lambda: _env_float("DICOM_TIMEOUT", 30.0))
    allowed_callers: str = field(default_factory=lambda: _env("ALLOWED_CALLERS", ""))
    backfill_max_in_flight: int = field(default_factory=lambda: int(_env_float("BACKFILL_MAX_IN_FLIGHT", 32)))
    sweep_interval_s: float = field(default_factory=lambda: _env_float("SWEEP_INTERVAL", 60.0))
    stale_after_s: float = field(default_factory=lambda: _env_float("STALE_AFTER", 0.0))
    metrics_port: int = field(default_factory=lambda: int(_env_float("METRICS_PORT", 9808)))
    log_format: str = field(default_factory=lambda: _env("LOG_FORMAT", "text"))
    torch_threads: int = field(default_factory=lambda: int(_env_float("TORCH_THREADS", 0)))
    sr_dir: Path | None = field(default_factory=lambda: Path(_env("SR_DIR", "")) if _env("SR_DIR", "") else None)
    sr_destination: str | None = field(default_factory=lambda: _env("SR_DESTINATION", "") or None)
    spool_retention_days: float = field(default_factory=lambda: _env_float("SPOOL_RETENTION_DAYS", 0.0))
    dicomweb_user: str | None = field(default_factory=lambda: _env("DICOMWEB_USER", "") or None)
    dicomweb_password: str | None = field(default_factory=lambda: _env("DICOMWEB_PASSWORD", "") or None, repr=False)
    dicomweb_token: str | None = field(default_factory=lambda: _env("DICOMWEB_TOKEN", "") or None, repr=False)
    dicomweb_ca_bundle: Path | None = field(
        default_factory=lambda: Path(_env("DICOMWEB_CA_BUNDLE", "")) if _env("DICOMWEB_CA_BUNDLE", "") else None)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"FETALHC_DEVICE={self.device!r}; choose one of: auto, cpu, cuda")
        if self.growth_standard not in ("intergrowth", "who"):
            raise ValueError(f"FETALHC_GROWTH_STANDARD={self.growth_standard!r}; choose one of: intergrowth, who")
        if self.batch_size < 1:
            raise ValueError("FETALHC_BATCH_SIZE must be at least 1")
        if self.max_frames < 0:
            raise ValueError(f"FETALHC_MAX_FRAMES={self.max_frames}: frames measured per cine, at least 1 "
                             "(0: every frame)")
        if self.head_plane_gate.lower() in ("on", "off"):
            object.__setattr__(self, "head_plane_gate", self.head_plane_gate.lower())
        elif not Path(self.head_plane_gate).is_file():
            raise ValueError(f"FETALHC_HEAD_PLANE_GATE={self.head_plane_gate!r}; choose one of: on, off, "
                             "or the path of a gate file")
        if self.head_plane_threshold is not None and not 0.0 <= self.head_plane_threshold <= 1.0:
            raise ValueError(f"FETALHC_HEAD_PLANE_THRESHOLD={self.head_plane_threshold}: a probability from 0 to 1 "
                             "(unset: the gate's own threshold)")
        if self.accept_other not in ("ignore", "refuse"):
            raise ValueError(f"FETALHC_ACCEPT_OTHER={self.accept_other!r}; choose one of: ignore, refuse")
        if not (self.max_scan_mb > 0 and self.max_instance_mb > 0 and self.dicom_timeout_s > 0):  # refuses nan too
            raise ValueError("FETALHC_MAX_SCAN_MB, FETALHC_MAX_INSTANCE_MB and FETALHC_DICOM_TIMEOUT must be above 0")
        if self.max_associations < 1:
            raise ValueError("FETALHC_MAX_ASSOCIATIONS must be at least 1")
        if self.allowed_callers:  # FETALHC_ALLOWED_CALLERS: checked now, not at the first association
            from worker.ingest.callers import parse_allowed_callers

            parse_allowed_callers(self.allowed_callers)
        if not 0 < len(self.ae_title) <= 16:
            raise ValueError(f"FETALHC_AE_TITLE={self.ae_title!r}: an AE title has 1 to 16 characters")
        if not 0 < self.listen_port < 65536:
            raise ValueError(f"FETALHC_LISTEN_PORT={self.listen_port} is not a TCP port (1-65535)")
        if self.backfill_max_in_flight < 1:
            raise ValueError("FETALHC_BACKFILL_MAX_IN_FLIGHT must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"FETALHC_LOG_FORMAT={self.log_format!r}; choose one of: text, json")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError(f"FETALHC_METRICS_PORT={self.metrics_port} is not a TCP port (0 disables)")
        if self.sweep_interval_s < 0 or self.stale_after_s < 0 or self.torch_threads < 0:
            raise ValueError("FETALHC_SWEEP_INTERVAL, FETALHC_STALE_AFTER and FETALHC_TORCH_THREADS cannot be negative")
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
            from worker.backfill.dimse import parse_dimse_url

            parse_dimse_url(self.sr_destination)
        if not self.stale_after_s:  # longer than one task plus a retry's backoff plus a wait for a free process
            object.__setattr__(self, "stale_after_s", 2 * self.task_time_limit_s + 120.0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
