"""One instance in: spool it, record its job, queue it. Shared by the listener, the watcher and backfill."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dicom_io.reader import ULTRASOUND_SOP_CLASSES
from worker.enqueue import enqueue_one
from worker.ingest.spool import write_instance
from worker.settings import Settings

log = logging.getLogger(__name__)


def is_ultrasound(sop_class_uid: str | None) -> bool:
    """True for US Image Storage and US Multi-frame Image Storage (current and retired UIDs)."""
    return str(sop_class_uid or "").strip() in ULTRASOUND_SOP_CLASSES


@dataclass(frozen=True)
class Intake:
    """What became of one accepted instance: where it lies, its job, whether the message went out.

    ``queued`` is False when the broker could not be reached: the job is durable (``received``)
    and the sweeper sends it later.
    """

    path: Path
    job_id: int
    queued: bool


def accept_instance(settings: Settings, sop_instance_uid: str, data: bytes, source: str, queue: str) -> Intake:
    """Write ``data`` (a whole DICOM file) to the spool, then record and queue a job for it.

    Returns only once the file is fsynced and the job row committed.

    Raises:
        ValueError: ``sop_instance_uid`` is not a valid UID.
        OSError: the spool cannot be written (disk full, permissions).
        sqlalchemy.exc.SQLAlchemyError: the database cannot record the job.
    """
    path = write_instance(settings.spool_dir, sop_instance_uid, data)
    job_id, queued = enqueue_one(settings, path, queue, source, sop_instance_uid=sop_instance_uid)
    log.info("accepted instance as job %s from %s on '%s'%s", job_id, source, queue,
             "" if queued else " (not queued yet: broker unreachable)")
    return Intake(path, job_id, queued)
