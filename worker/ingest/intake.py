"""One instance in: spool it, record its job, queue it. Shared by the listener, the watcher and backfill."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from db import UNFINISHED_JOB_STATUSES, Job, session_scope
from dicom_io.ob_report import OB_REPORT_SOP_CLASSES
from dicom_io.reader import ULTRASOUND_SOP_CLASSES
from worker.core.settings import Settings
from worker.ingest.spool import content_digest, spool_path, variant_path, write_atomic
from worker.queue.enqueue import enqueue_one

log = logging.getLogger(__name__)

# One instance written at a time per process: the "is a job still reading it" check and the write go together.
_SPOOL_LOCK = threading.Lock()


def is_ultrasound(sop_class_uid: str | None) -> bool:
    """True for US Image Storage and US Multi-frame Image Storage (current and retired UIDs)."""
    return str(sop_class_uid or "").strip() in ULTRASOUND_SOP_CLASSES


# What is taken in wherever scans arrive: ultrasound images, and the SR classes (Comprehensive, Enhanced,
# Extensible) a scanner's OB-GYN report comes in (recorded as a report by the pipeline, never measured).
INTAKE_SOP_CLASSES: frozenset[str] = frozenset(ULTRASOUND_SOP_CLASSES) | OB_REPORT_SOP_CLASSES


def is_intake_class(sop_class_uid: str | None) -> bool:
    """True for an ultrasound image class or an SR class an OB-GYN report may be stored in."""
    return str(sop_class_uid or "").strip() in INTAKE_SOP_CLASSES


@dataclass(frozen=True)
class Intake:
    """What became of one accepted instance: where it lies, its job, whether the message went out.

    ``queued`` is False when the broker could not be reached: the job is durable (``received``)
    and the sweeper sends it later.
    """

    path: Path
    job_id: int
    queued: bool


def accept_instance(settings: Settings, sop_instance_uid: str, data: bytes | Path, source: str, queue: str) -> Intake:
    """Write ``data`` (a whole DICOM file: bytes, or a file copied in chunks) to the spool, record and queue a job.

    Returns only once the file is fsynced and the job row committed. The spool file of a job that
    is not finished is never replaced (``spool_target``).

    Raises:
        ValueError: ``sop_instance_uid`` is not a valid UID.
        OSError: the spool cannot be written (disk full, permissions).
        sqlalchemy.exc.SQLAlchemyError: the database cannot record the job.
    """
    with _SPOOL_LOCK:
        path, write = spool_target(settings, sop_instance_uid, data)
        if write:
            write_atomic(path, data)
    job_id, queued = enqueue_one(settings, path, queue, source, sop_instance_uid=sop_instance_uid)
    log.info("accepted instance as job %s from %s on '%s'%s", job_id, source, queue,
             "" if queued else " (not queued yet: broker unreachable)")
    return Intake(path, job_id, queued)


def spool_target(settings: Settings, sop_instance_uid: str, data: bytes | Path) -> tuple[Path, bool]:
    """Where ``data`` goes in the spool, and whether it must be written there.

    ``<uid>.dcm`` normally (the same instance sent again replaces its own file). While an unfinished
    job still reads that file: the same content is not written again; different content goes beside
    it as ``<uid>.<sha256 prefix>.dcm``, so the waiting job measures what it was recorded for.
    """
    path = spool_path(settings.spool_dir, sop_instance_uid)
    if not path.exists() or not _unfinished_job_reads(settings, path):
        return path, True
    digest = content_digest(data)
    if content_digest(path) == digest:
        return path, False
    log.warning("instance arrived again with other content while its job is unfinished; spooled beside it")
    variant = variant_path(settings.spool_dir, sop_instance_uid, digest)
    return variant, not variant.exists()


def _unfinished_job_reads(settings: Settings, path: Path) -> bool:
    with session_scope(settings.database_url) as session:
        stmt = select(Job.id).where(Job.path == str(path.resolve()), Job.status.in_(UNFINISHED_JOB_STATUSES)).limit(1)
        return session.scalar(stmt) is not None
