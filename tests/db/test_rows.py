"""MeasurementRow: the one typed row, its given fields, and what the database does with them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from db import session_scope, upgrade, upsert_measurement
from db.rows import MeasurementRow
from db.tables import MEASUREMENT_COLUMNS, Measurement


def test_its_fields_are_the_tables_columns() -> None:
    names = {f.name for f in dataclasses.fields(MeasurementRow)} - {"given"}
    assert names == set(MEASUREMENT_COLUMNS) - {"id", "created_at", "updated_at"}


def test_frozen_validated_and_read_as_the_dict_it_replaces() -> None:
    row = MeasurementRow.of(sop_instance_uid="1.2", frame=1, model_version="v" * 64, status="measured", hc_mm=170.0)
    assert (row["status"], row.get("bpd_mm"), "bpd_mm" in row, list(row)[:2]) == (
        "measured", None, False, ["sop_instance_uid", "frame"])
    with pytest.raises(KeyError):
        row["bpd_mm"]  # never given, as a dict without the key
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.hc_mm = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="choose one of: measured, needs_review, not_head, failed"):
        MeasurementRow.of(status="great")
    with pytest.raises(TypeError):
        MeasurementRow.of(status="failed", no_such_column=1)
    changed = row.replace(detail="checked", hc_mm=171.0)
    assert (changed["hc_mm"], row["hc_mm"], list(changed)[-1]) == (171.0, 170.0, "detail")
    assert row == {"sop_instance_uid": "1.2", "frame": 1, "model_version": "v" * 64, "status": "measured",
                   "hc_mm": 170.0}


def test_a_field_never_given_is_left_as_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    upgrade(url)
    key = {"sop_instance_uid": "1.2.3", "frame": 1, "model_version": "m" * 64}
    with session_scope(url) as session:
        upsert_measurement(session, MeasurementRow.of(**key, status="measured", sr_status="done",
                                                      study_date=dt.date(2026, 1, 2)))
    with session_scope(url) as session:  # stored again while SR export is off: sr_status not given
        upsert_measurement(session, MeasurementRow.of(**key, status="needs_review"))
    with session_scope(url) as session:
        stored = session.query(Measurement).one()
        assert (stored.status, stored.sr_status, stored.study_date) == ("needs_review", "done", dt.date(2026, 1, 2))
