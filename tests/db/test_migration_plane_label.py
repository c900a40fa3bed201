"""Migration 0010 (issue 19): the plane label columns and their index, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, select, text

from db import Measurement, current_revision, dispose_all, get_engine, session_scope, upgrade, upsert_measurement
from db.migrate import schema_differences


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh database with no tables at all."""
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_0010_adds_the_plane_label_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0009 with a not_head row: the three columns read NULL on it (never guessed), the index by plane
    appears, a labelled row round-trips its 14 probabilities; 0009 again drops them and keeps both rows."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0009")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, study_date, "
                          "created_at, updated_at) VALUES ('1.2.19', 1, 'v1', 'not_head', '2026-01-02', "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    dispose_all()
    assert upgrade(empty_url) == "0010" == current_revision(empty_url)
    assert schema_differences(get_engine(empty_url)) == []
    indexes = {i["name"]: i["column_names"] for i in inspect(get_engine(empty_url)).get_indexes("measurements")}
    assert indexes["ix_measurements_plane_date"] == ["plane_label", "study_date", "id"]
    probabilities = {"abdominal": 0.9131, "background": 0.05, "brain_tv": 0.0369}
    with session_scope(empty_url) as s:
        old = s.scalars(select(Measurement)).one()
        assert (old.plane_label, old.plane_probability, old.plane_probabilities) == (None, None, None)
        upsert_measurement(s, {"sop_instance_uid": "1.2.20", "frame": 1, "model_version": "v1", "status": "not_head",
                               "study_date": dt.date(2026, 1, 3), "plane_label": "abdominal",
                               "plane_probability": 0.9131, "plane_probabilities": probabilities})
    with session_scope(empty_url) as s:
        new = s.scalars(select(Measurement).where(Measurement.sop_instance_uid == "1.2.20")).one()
        assert (new.plane_label, new.plane_probability, new.plane_probabilities) == ("abdominal", 0.9131,
                                                                                     probabilities)
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0009")
    inspector = inspect(get_engine(empty_url))
    assert {"plane_label", "plane_probability", "plane_probabilities"}.isdisjoint(
        c["name"] for c in inspector.get_columns("measurements"))
    assert "ix_measurements_plane_date" not in {i["name"] for i in inspector.get_indexes("measurements")}
    with get_engine(empty_url).connect() as conn:
        assert conn.execute(text("SELECT sop_instance_uid, status FROM measurements ORDER BY sop_instance_uid")
                            ).all() == [("1.2.19", "not_head"), ("1.2.20", "not_head")]
