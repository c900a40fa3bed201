"""One instance in: checked, spooled, recorded, queued. The one rule for every way an instance arrives.

The listener, the C-GET and C-MOVE receivers of backfill, ``watch``, a backfill folder and DICOMweb all go
through here:

* ``verify_arrival``: the data set's own (0008,0016) SOP Class and (0008,0018) SOP Instance UID must be the ones
  it was sent (or asked for) as, a valid UID of a class taken in, and the instance at most
  ``FETALHC_MAX_INSTANCE_MB`` (the header is parsed bounded: ``dicom_io.reader.read_instance_identity``);
* ``accept_instance``: the spool file of an instance that a job reads is never replaced. The same bytes again
  are not rewritten (a new job measures them again: idempotent). Other bytes from the same patient with the
  same pixels go beside it as ``<uid>.<sha>.dcm`` and are measured. Other bytes with another patient's identity
  (Patient ID, and issuer and birth date where both have one) or other pixels, against the file or against the
  instance's stored rows, are kept beside it too but not measured: a ``conflict`` is recorded
  (``intake_conflicts``: reason, where each copy lies, both patients' IDs; never in a log) and the arrival's job
  is finished ``failed``/``conflict``, so a finished result is never replaced by someone else's data.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from db import Job, JobStatus, create_job, session_scope, set_job_status
from db.conflicts import PatientIdentity, record_conflict, same_patient, stored_patients
from db.tables import ConflictReason
from dicom_io.errors import DicomError
from dicom_io.ob_report import OB_REPORT_SOP_CLASSES
from dicom_io.reader import ULTRASOUND_SOP_CLASSES, InstanceIdentity, read_instance_identity
from worker.core.settings import Settings
from worker.ingest.spool import content_digest, is_valid_uid, spool_path, variant_path, write_atomic
from worker.queue.enqueue import enqueue_one

log = logging.getLogger(__name__)

# One instance written at a time per process: the "is a job still reading it" check and the write go together.
_SPOOL_LOCK = threading.Lock()
CONFLICT = "conflict"  # the reason on the job of an arrival kept aside as a conflict


def is_ultrasound(sop_class_uid: str | None) -> bool:
    """True for US Image Storage and US Multi-frame Image Storage (current and retired UIDs)."""
    return str(sop_class_uid or "").strip() in ULTRASOUND_SOP_CLASSES


# What is taken in wherever scans arrive: ultrasound images, and the SR classes (Comprehensive, Enhanced,
# Extensible) a scanner's OB-GYN report comes in (recorded as a report by the pipeline, never measured).
INTAKE_SOP_CLASSES: frozenset[str] = frozenset(ULTRASOUND_SOP_CLASSES) | OB_REPORT_SOP_CLASSES


def is_intake_class(sop_class_uid: str | None) -> bool:
    """True for an ultrasound image class or an SR class an OB-GYN report may be stored in."""
    return str(sop_class_uid or "").strip() in INTAKE_SOP_CLASSES


class ArrivalRefused(Exception):
    """An instance that is not taken in; ``reason`` says why (no patient data in the message).

    Reasons: ``invalid_uid``, ``not_intake_class``, ``unreadable``, ``sop_class_mismatch``, ``instance_mismatch``,
    ``too_large``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def verify_arrival(settings: Settings, data: bytes | Path, sop_class: str | None, sop_uid: str) -> InstanceIdentity:
    """Check an arrival against the class and UID it was sent or asked for as; its identity when it holds.

    ``sop_class`` None: not announced (a file found in a folder, a WADO-RS answer): any class taken in.

    Raises:
        ArrivalRefused: see its reasons.
    """
    if not is_valid_uid(sop_uid):
        raise ArrivalRefused("no valid SOP Instance UID to name the instance by", "invalid_uid")
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    if size > settings.max_instance_mb * (1 << 20):
        raise ArrivalRefused(f"an instance of {size >> 20} MiB is over FETALHC_MAX_INSTANCE_MB "
                             f"({settings.max_instance_mb:g})", "too_large")
    try:
        identity = read_instance_identity(data)
    except DicomError as exc:
        raise ArrivalRefused(f"the data set cannot be parsed ({exc.reason})", "unreadable") from exc
    if sop_class is not None and identity.sop_class_uid != sop_class:
        raise ArrivalRefused("the data set's SOP Class UID is not the one it was sent as", "sop_class_mismatch")
    if not is_intake_class(identity.sop_class_uid):
        raise ArrivalRefused("the data set is neither ultrasound nor an SR class a report comes in",
                             "not_intake_class")
    if identity.sop_instance_uid != sop_uid:
        raise ArrivalRefused("the data set's SOP Instance UID is not the one it was sent or asked for as",
                             "instance_mismatch")
    return identity


@dataclass(frozen=True)
class Intake:
    """What became of one accepted instance: where it lies, its job, whether the message went out.

    ``queued`` is False when the broker could not be reached: the job is durable (``received``)
    and the sweeper sends it later; and for a ``conflict`` (its reason here), whose job is finished unmeasured.
    """

    path: Path
    job_id: int
    queued: bool
    conflict: str | None = None


@dataclass(frozen=True)
class _Conflict:
    reason: ConflictReason
    existing_path: str | None
    existing: PatientIdentity
    received: PatientIdentity


@dataclass(frozen=True)
class Placement:
    """Where an arrival goes (``path``), whether it must be written there, and the conflict it is, if any."""

    path: Path
    write: bool
    conflict: _Conflict | None = None


def accept_instance(settings: Settings, sop_instance_uid: str, data: bytes | Path, source: str, queue: str,
                    in_place: bool = False) -> Intake:
    """Place ``data`` (a whole DICOM file: bytes, or a file copied in chunks) in the spool, record and queue a job.

    ``in_place``: the file stays where it is (a backfill folder's archive) and the job reads it there.
    Returns only once the file is fsynced and the job row committed; a conflict (module docstring) is kept and
    recorded, its job finished ``failed``/``conflict`` and not queued.

    Raises:
        ValueError: ``sop_instance_uid`` is not a valid UID.
        OSError: the spool cannot be written (disk full, permissions).
        sqlalchemy.exc.SQLAlchemyError: the database cannot record the job.
    """
    with _SPOOL_LOCK:
        placement = place_instance(settings, sop_instance_uid, data, in_place)
        if placement.write:
            write_atomic(placement.path, data)
    if placement.conflict is not None:
        return _record(settings, sop_instance_uid, placement.path, placement.conflict, source, queue)
    job_id, queued = enqueue_one(settings, placement.path, queue, source, sop_instance_uid=sop_instance_uid)
    log.info("accepted instance as job %s from %s on '%s'%s", job_id, source, queue,
             "" if queued else " (not queued yet: broker unreachable)")
    return Intake(placement.path, job_id, queued)


def place_instance(settings: Settings, sop_instance_uid: str, data: bytes | Path, in_place: bool = False) -> Placement:
    """Where ``data`` goes and whether it must be written there, by the rule of the module docstring."""
    primary = spool_path(settings.spool_dir, sop_instance_uid)
    home = Path(data) if in_place else primary
    if primary.exists() and not (in_place and primary.resolve() == Path(data).resolve()):
        digest = content_digest(data)
        if content_digest(primary) == digest:
            return Placement(home, False)  # the same bytes again: nothing written, measured again (idempotent)
        beside = Path(data) if in_place else variant_path(settings.spool_dir, sop_instance_uid, digest)
        write = not in_place and not beside.exists()
        received, existing = _identity(data), _identity(primary)
        reason = _differs(existing, received)
        if reason is not None:
            log.warning("an instance arrived again with %s; kept beside the first copy, not measured (conflict)",
                        reason.value.replace("_", " "))
            return Placement(beside, write, _Conflict(reason, str(primary), _patient(existing), _patient(received)))
        if _read_by_a_job(settings, primary):  # same patient, same pixels, other header: measured, beside it
            log.warning("an instance arrived again with another header; spooled beside the first copy")
            return Placement(beside, write)
        return Placement(home, not in_place)  # a file no job reads: replaced
    with session_scope(settings.database_url) as session:
        stored = stored_patients(session, sop_instance_uid)
    if stored:
        received_patient = _patient(_identity(data))
        for patient, path in stored:
            if not same_patient(patient, received_patient):
                log.warning("an instance arrived again with another patient's identity than its stored result; "
                            "kept, not measured (conflict)")
                beside = Path(data) if in_place else variant_path(settings.spool_dir, sop_instance_uid,
                                                                  content_digest(data))
                return Placement(beside, not in_place and not beside.exists(),
                                 _Conflict(ConflictReason.OTHER_PATIENT, path, patient, received_patient))
    return Placement(home, not in_place)


def _identity(data: bytes | Path) -> InstanceIdentity | None:
    try:
        return read_instance_identity(data, pixels=True)
    except DicomError:
        return None


def _patient(identity: InstanceIdentity | None) -> PatientIdentity:
    if identity is None:
        return PatientIdentity()
    return PatientIdentity.of(identity.patient_id, identity.issuer_of_patient_id, identity.patient_birth_date)


def _differs(existing: InstanceIdentity | None, received: InstanceIdentity | None) -> ConflictReason | None:
    """Why ``received`` is not just another copy of ``existing``: another patient, other pixels; None if it is."""
    if existing is None or received is None:
        return ConflictReason.OTHER_PIXELS  # one of them cannot be read: nothing says it is the same image
    if not same_patient(_patient(existing), _patient(received)):
        return ConflictReason.OTHER_PATIENT
    if existing.pixel_digest != received.pixel_digest:
        return ConflictReason.OTHER_PIXELS
    return None


def _read_by_a_job(settings: Settings, path: Path) -> bool:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(Job.id).where(Job.path == str(path.resolve())).limit(1)) is not None


def _record(settings: Settings, sop_instance_uid: str, path: Path, conflict: _Conflict, source: str,
            queue: str) -> Intake:
    """A conflict's job (finished failed/conflict, never queued) and its ``intake_conflicts`` row, in one commit."""
    what = {ConflictReason.OTHER_PATIENT: "another patient's identity", ConflictReason.OTHER_PIXELS: "other pixels"}
    with session_scope(settings.database_url) as session:
        job_id = create_job(session, str(path.resolve()), source, queue, sop_instance_uid=sop_instance_uid)
        conflict_id = record_conflict(
            session, sop_instance_uid=sop_instance_uid, source=source, reason=conflict.reason.value,
            detail=f"received again with {what.get(conflict.reason, conflict.reason.value)}; kept, not measured",
            kept_path=str(path.resolve()), existing_path=conflict.existing_path,
            patient_id_existing=conflict.existing.patient_id, patient_id_received=conflict.received.patient_id,
            job_id=job_id)
        set_job_status(session, job_id, JobStatus.FAILED, reason=CONFLICT,
                       detail=f"{conflict.reason.value}: this copy differs from the instance received before under "
                              f"its UID; kept, not measured (intake_conflicts {conflict_id})")
    log.warning("recorded conflict %s (%s) as job %s from %s", conflict_id, conflict.reason.value, job_id, source)
    return Intake(path, job_id, False, conflict.reason.value)
