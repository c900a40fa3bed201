"""Arrivals that contradict an earlier one (``intake_conflicts``), and the one rule for "the same patient".

An instance received again under a UID already taken, with another patient's identity or other pixels, is
recorded here (where the new copy was kept, both patients' IDs) instead of being measured; so is an OB-GYN
report whose patient is not its study's. Patient IDs go to this table, never to a log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.tables import IntakeConflict, Measurement


@dataclass(frozen=True)
class PatientIdentity:
    """Who an instance or a row belongs to: (0010,0020) Patient ID, (0010,0021) Issuer, (0010,0030) Birth Date."""

    patient_id: str = ""
    issuer: str = ""
    birth_date: dt.date | None = None

    @classmethod
    def of(cls, patient_id: str | None, issuer: str | None = None, birth_date: dt.date | None = None) -> PatientIdentity:
        """From stored or read values (None and blanks are empty)."""
        return cls((patient_id or "").strip(), (issuer or "").strip(), birth_date)


def same_patient(a: PatientIdentity, b: PatientIdentity) -> bool:
    """True when ``a`` and ``b`` name the same patient: the same Patient ID (both empty counts as the same), and the
    same issuer and birth date wherever both have one."""
    if a.patient_id != b.patient_id:
        return False
    if a.issuer and b.issuer and a.issuer != b.issuer:
        return False
    return not (a.birth_date and b.birth_date and a.birth_date != b.birth_date)


def stored_patients(session: Session, sop_instance_uid: str) -> list[tuple[PatientIdentity, str | None]]:
    """The patient on each stored measurement row of an instance (any model version), with the row's path.

    Rows whose Patient ID is NULL (a scan that failed before its header was read, a poison scan) name no patient
    and are left out; an empty Patient ID read from a header is a value like any other.
    """
    stmt = (select(Measurement.patient_id, Measurement.issuer_of_patient_id, Measurement.patient_birth_date,
                   Measurement.path)
            .where(Measurement.sop_instance_uid == sop_instance_uid, Measurement.patient_id.is_not(None)))
    return [(PatientIdentity.of(pid, issuer, born), path) for pid, issuer, born, path in session.execute(stmt)]


def record_conflict(session: Session, *, sop_instance_uid: str, source: str, reason: str, detail: str | None = None,
                    kept_path: str | None = None, existing_path: str | None = None,
                    patient_id_existing: str | None = None, patient_id_received: str | None = None,
                    job_id: int | None = None, study_instance_uid: str | None = None) -> int:
    """Record one conflict (``ConflictReason``); returns its id."""
    row = IntakeConflict(sop_instance_uid=sop_instance_uid[:64], study_instance_uid=(study_instance_uid or None),
                         source=source[:32], reason=reason, detail=detail, kept_path=kept_path,
                         existing_path=existing_path, patient_id_existing=(patient_id_existing or "")[:64] or None,
                         patient_id_received=(patient_id_received or "")[:64] or None, job_id=job_id)
    session.add(row)
    session.flush()
    return row.id


def list_conflicts(session: Session, sop_instance_uid: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Conflicts, newest first (every column), optionally of one instance."""
    stmt = select(IntakeConflict).order_by(IntakeConflict.id.desc()).limit(limit)
    if sop_instance_uid:
        stmt = stmt.where(IntakeConflict.sop_instance_uid == sop_instance_uid)
    return [{c.name: getattr(row, c.name) for c in IntakeConflict.__table__.columns} for row in session.scalars(stmt)]
