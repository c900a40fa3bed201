"""Alembic migrations on SQLite and a real PostgreSQL: from empty, again, adopting ``create_all``, racing, in step."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Float, MetaData, event, inspect, select, text

from db import (
    Base,
    Job,
    Measurement,
    SchemaError,
    create_job,
    current_revision,
    dispose_all,
    get_engine,
    head_revision,
    query_measurements,
    session_scope,
    upgrade,
    upsert_measurement,
)
from db.migrate import BASELINE, schema_differences

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh database with no tables at all."""
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names())


def _versions(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _row(uid: str) -> dict[str, object]:
    return {"sop_instance_uid": uid, "frame": 1, "model_version": "v1", "status": "measured", "hc_mm": 171.5,
            "patient_id": "P1", "study_date": dt.date(2026, 1, 5)}


def _legacy_database(url: str) -> None:
    """A database as ``create_all`` made it before migrations existed: the baseline schema, unstamped."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(url).begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))


def test_the_baseline_is_the_first_revision_and_head_is_later() -> None:
    assert BASELINE == "0001" and head_revision() == "0010"


def test_upgrade_from_empty_creates_the_schema_at_head(empty_url: str) -> None:
    assert current_revision(empty_url) is None
    assert upgrade(empty_url) == head_revision()
    assert current_revision(empty_url) == head_revision()
    assert _tables(empty_url) == {"jobs", "intake_conflicts", "measurements", "ob_reports", "ob_report_fetuses", "reviews",
                                  "alembic_version"}
    inspector = inspect(get_engine(empty_url))
    assert {i["name"] for i in inspector.get_indexes("measurements")} >= {
        "ix_measurements_patient_date", "ix_measurements_status", "ix_measurements_study_instance_uid"}
    assert {i["name"] for i in inspector.get_indexes("jobs")} >= {"ix_jobs_sop_instance_uid", "ix_jobs_status",
                                                                  "ix_jobs_path"}
    assert [u["column_names"] for u in inspector.get_unique_constraints("measurements")] == [
        ["sop_instance_uid", "frame", "model_version"]]
    with session_scope(empty_url) as s:  # the repository works on the migrated schema, upsert included
        upsert_measurement(s, _row("1.2.3"))
        upsert_measurement(s, _row("1.2.3"))
    with session_scope(empty_url) as s:
        assert s.scalars(select(Measurement.hc_mm)).all() == [171.5]
        assert s.scalar(select(Measurement.created_at)) is not None  # the server default


def test_second_upgrade_keeps_rows_and_runs_no_ddl(empty_url: str) -> None:
    upgrade(empty_url)
    with session_scope(empty_url) as s:
        upsert_measurement(s, _row("1.2.3"))
    dispose_all()  # forget the per-process cache: the next call must ask the database
    statements: list[str] = []
    event.listen(get_engine(empty_url), "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    assert upgrade(empty_url) == head_revision()
    assert statements, "the second upgrade should have read the version from the database"
    assert not [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT"))]
    assert _versions(empty_url) == [head_revision()]
    with session_scope(empty_url) as s:
        assert s.scalars(select(Measurement.sop_instance_uid)).all() == ["1.2.3"]
    statements.clear()
    upgrade(empty_url)  # cached in this process: not even a query
    assert statements == []


def test_adopts_a_create_all_database_and_keeps_its_rows(empty_url: str) -> None:
    _legacy_database(empty_url)
    assert "ix_jobs_path" not in {i["name"] for i in inspect(get_engine(empty_url)).get_indexes("jobs")}
    with session_scope(empty_url) as s:
        upsert_measurement(s, _row("1.2.840.1"))
        job_id = create_job(s, "/spool/a.dcm", "live")
    assert current_revision(empty_url) is None
    assert upgrade(empty_url) == head_revision()
    assert _versions(empty_url) == [head_revision()]
    with session_scope(empty_url) as s:
        row = s.scalars(select(Measurement)).one()
        assert (row.sop_instance_uid, row.hc_mm, row.patient_id) == ("1.2.840.1", 171.5, "P1")
        job = s.get(Job, job_id)
        assert job is not None and job.path == "/spool/a.dcm"
    assert schema_differences(get_engine(empty_url)) == []


def test_migrated_schema_matches_the_models(empty_url: str) -> None:
    """Fails when ``db/tables.py`` changes without a new revision in ``db/migrations/versions``."""
    upgrade(empty_url)
    assert schema_differences(get_engine(empty_url)) == []


def test_schema_check_sees_a_model_change(sqlite_url: str) -> None:
    """The check above is not vacuous: a column added to the models (not migrated) is reported."""
    upgrade(sqlite_url)
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["measurements"].append_column(Column("hc_percentile_extra", Float, nullable=True))
    diffs = schema_differences(get_engine(sqlite_url), changed)
    assert [(d[0], d[3].name) for d in diffs] == [("add_column", "hc_percentile_extra")]


def test_refuses_to_adopt_tables_that_lack_baseline_columns(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO jobs (path) VALUES ('/spool/old.dcm')"))
    with pytest.raises(SchemaError, match=r"table measurements.*jobs\.attempts"):
        upgrade(sqlite_url)
    assert _tables(sqlite_url) == {"jobs"}  # nothing stamped, nothing created, nothing dropped
    with engine.connect() as conn:
        assert conn.execute(text("SELECT path FROM jobs")).scalars().all() == ["/spool/old.dcm"]


def test_refuses_a_revision_newer_than_this_code(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with get_engine(sqlite_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    dispose_all()
    with pytest.raises(SchemaError, match="'9999'"):
        upgrade(sqlite_url)


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from db import upgrade
    url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    print(upgrade(url))
""")


def test_concurrent_upgrades_from_several_processes(empty_url: str, tmp_path: Path) -> None:
    """Workers starting together on an empty database: one migrates, the others wait and find it done."""
    n = 4
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, empty_url, str(tmp_path / f"ready{i}"),
                               str(tmp_path / "go")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
            assert time.monotonic() < deadline, "child processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        (tmp_path / "go").touch()  # all imported: release them at once
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in results]
    assert [out.strip() for out, _ in results] == [head_revision()] * n
    assert _versions(empty_url) == [head_revision()]
    assert schema_differences(get_engine(empty_url)) == []


def test_cli_db_upgrade_and_current(fetalhc_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    assert main(["db", "current", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": None, "head": head_revision(), "up_to_date": False}
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database is up to date (schema revision {head_revision()})"
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"schema revision {head_revision()} (up to date)"


def test_0003_adds_head_plane_score_and_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0002 with a row: the new column reads NULL, a not_head row stores its score; 0002 again drops it."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "created_at, updated_at) VALUES ('1.2.9', 1, 'v1', 'measured', 171.5, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    assert "head_plane_score" not in {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}
    dispose_all()
    assert upgrade(empty_url) == head_revision()
    with session_scope(empty_url) as s:
        upsert_measurement(s, {**_row("1.2.10"), "status": "not_head", "hc_mm": None, "reason": "not_head_plane",
                               "head_plane_score": 0.031})
    with session_scope(empty_url) as s:
        rows = {m.sop_instance_uid: m for m in s.scalars(select(Measurement))}
        assert (rows["1.2.9"].hc_mm, rows["1.2.9"].head_plane_score) == (171.5, None)
        assert (rows["1.2.10"].status, rows["1.2.10"].head_plane_score) == ("not_head", 0.031)
    assert schema_differences(get_engine(empty_url)) == []
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    columns = {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}
    assert "head_plane_score" not in columns and "hc_mm" in columns
    with get_engine(empty_url).connect() as conn:
        assert sorted(conn.execute(text("SELECT sop_instance_uid FROM measurements")).scalars()) == ["1.2.10", "1.2.9"]


def test_0004_adds_sr_status_null_for_existing_rows_and_downgrades(empty_url: str) -> None:
    """From 0003 with a measured row: it owes no SR (NULL, so the sweep leaves history alone); 0003 again drops it."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "created_at, updated_at) VALUES ('1.2.11', 1, 'v1', 'measured', 171.5, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    dispose_all()
    assert upgrade(empty_url) == head_revision()
    with session_scope(empty_url) as s:
        upsert_measurement(s, {**_row("1.2.12"), "sr_status": "pending"})
    with session_scope(empty_url) as s:
        assert {m.sop_instance_uid: m.sr_status for m in s.scalars(select(Measurement))} == {
            "1.2.11": None, "1.2.12": "pending"}
    assert schema_differences(get_engine(empty_url)) == []
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0003")
    assert "sr_status" not in {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}


def test_0005_adds_the_report_tables_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0004 with a measured row: the two report tables appear (the row untouched), take a report with its
    fetuses, match the models; 0004 again drops them and keeps the measurement."""
    from alembic import command

    from db import ObReportFetusRow, ObReportRow, upsert_ob_report
    from db.migrate import alembic_config
    from dicom_io import parse_ob_report
    from tests.dicom_io.ob_reports import Fetus, ob_report_dataset

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "created_at, updated_at) VALUES ('1.2.13', 1, 'v1', 'measured', 171.5, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    assert "ob_reports" not in _tables(empty_url)
    dispose_all()
    assert upgrade(empty_url) == head_revision()  # through 0005 (and the later revisions)
    inspector = inspect(get_engine(empty_url))
    assert {i["name"] for i in inspector.get_indexes("ob_reports")} >= {"ix_ob_reports_study_instance_uid"}
    assert [u["column_names"] for u in inspector.get_unique_constraints("ob_reports")] == [["sop_instance_uid"]]
    assert [(f["referred_table"], f["constrained_columns"], f["options"].get("ondelete"))
            for f in inspector.get_foreign_keys("ob_report_fetuses")] == [("ob_reports", ["report_id"], "CASCADE")]
    report = parse_ob_report(ob_report_dataset(study_uid="1.2.14", fetuses=(Fetus("A", hc_mm=171.0),
                                                                          Fetus("B", hc_mm=160.0))))
    with session_scope(empty_url) as s:
        upsert_ob_report(s, report)
    with session_scope(empty_url) as s:
        assert s.scalars(select(Measurement.hc_mm)).all() == [171.5]
        assert s.scalars(select(ObReportRow.fetus_count)).all() == [2]
        assert sorted(s.scalars(select(ObReportFetusRow.fetus_id))) == ["A", "B"]
        assert s.scalar(select(ObReportRow.created_at)) is not None  # the server default
    assert schema_differences(get_engine(empty_url)) == []
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert {"ob_reports", "ob_report_fetuses"}.isdisjoint(_tables(empty_url))
    with get_engine(empty_url).connect() as conn:
        assert conn.execute(text("SELECT sop_instance_uid FROM measurements")).scalars().all() == ["1.2.13"]


def test_0006_adds_the_sonographer_columns_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0005 with a measured row: sonographer_hc_mm, hc_diff_mm and fetus_count appear NULL; 0005 again drops them."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0005")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "created_at, updated_at) VALUES ('1.2.15', 1, 'v1', 'measured', 171.5, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
    with session_scope(empty_url) as s:
        assert s.execute(select(Measurement.hc_mm, Measurement.sonographer_hc_mm, Measurement.hc_diff_mm,
                                Measurement.fetus_count)).all() == [(171.5, None, None, None)]
    assert upgrade(empty_url) == head_revision()
    assert schema_differences(get_engine(empty_url)) == []
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    columns = {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}
    assert {"sonographer_hc_mm", "hc_diff_mm", "fetus_count"}.isdisjoint(columns) and "hc_mm" in columns


def test_0007_indexes_the_results_order_and_downgrades(empty_url: str) -> None:
    """From 0006 with rows: the (study_date, id) and (status, study_date, id) indexes appear; 0006 drops them."""
    from alembic import command

    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, study_date, "
                          "created_at, updated_at) VALUES ('1.2.16', 1, 'v1', 'needs_review', '2026-01-02', "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    dispose_all()
    assert upgrade(empty_url) == head_revision()
    indexes = {i["name"]: i["column_names"] for i in inspect(get_engine(empty_url)).get_indexes("measurements")}
    assert indexes["ix_measurements_study_date"] == ["study_date", "id"]
    assert indexes["ix_measurements_status_date"] == ["status", "study_date", "id"]
    assert schema_differences(get_engine(empty_url)) == []
    with session_scope(empty_url) as s:
        assert [m.sop_instance_uid for m in query_measurements(s, status="needs_review", limit=100)] == ["1.2.16"]
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0006")
    names = {i["name"] for i in inspect(get_engine(empty_url)).get_indexes("measurements")}
    assert {"ix_measurements_study_date", "ix_measurements_status_date"}.isdisjoint(names)


def test_0008_adds_reviews_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0007 with a needs_review row: ``reviews`` appears and the row's review columns read NULL (nobody
    reviewed it); two decisions are both kept, the row carries the latest and its model values stay; 0007 again
    drops the table and the columns and keeps the row."""
    from alembic import command

    from db import ReviewDecision, effective_values, record_review, reviews_of
    from db.migrate import alembic_config

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0007")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "bpd_mm, ofd_mm, created_at, updated_at) VALUES ('1.2.17', 1, 'v1', 'needs_review', "
                          "171.5, 45.0, 60.0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    assert "reviews" not in _tables(empty_url)
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0008")
    assert current_revision(empty_url) == "0008"
    inspector = inspect(get_engine(empty_url))
    assert [(f["referred_table"], f["constrained_columns"], f["options"].get("ondelete"))
            for f in inspector.get_foreign_keys("reviews")] == [("measurements", ["measurement_id"], "SET NULL")]
    assert {i["name"] for i in inspector.get_indexes("reviews")} >= {"ix_reviews_measurement", "ix_reviews_decided_at"}
    assert upgrade(empty_url) == head_revision()  # the ORM below reads every column of today's schema
    assert schema_differences(get_engine(empty_url)) == []
    with session_scope(empty_url) as s:
        row = s.scalars(select(Measurement)).one()
        assert (row.review_decision, row.reviewed_by, row.reviewed_hc_mm) == (None, None, None)
        assert effective_values(row)["effective_hc_mm"] == 171.5 and not effective_values(row)["confirmed"]
        record_review(s, row, "alice", ReviewDecision.ACCEPTED, {"hc_mm": 171.5, "bpd_mm": 45.0, "ofd_mm": 60.0})
        record_review(s, row, "bob", ReviewDecision.CORRECTED, {"hc_mm": 180.25, "note": "skull edge outside"})
    with session_scope(empty_url) as s:
        row = s.scalars(select(Measurement)).one()
        assert (row.hc_mm, row.status) == (171.5, "needs_review")  # the model's own values stay
        assert (row.review_decision, row.reviewed_by, row.reviewed_hc_mm) == ("corrected", "bob", 180.25)
        assert row.reviewed_at is not None and row.reviewed_at.tzinfo is not None or empty_url.startswith("sqlite")
        assert [(r.reviewer, r.decision, r.sop_instance_uid) for r in reviews_of(s, row)] == [
            ("alice", "accepted", "1.2.17"), ("bob", "corrected", "1.2.17")]
        assert effective_values(row)["effective_hc_mm"] == 180.25 and effective_values(row)["confirmed"]
    with get_engine(empty_url).connect() as conn, pytest.raises(Exception, match="(?i)check"):
        conn.execute(text("INSERT INTO reviews (sop_instance_uid, frame, model_version, reviewer, decided_at, "
                          "decision) VALUES ('1.2.17', 1, 'v1', 'eve', CURRENT_TIMESTAMP, 'maybe')"))
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0007")
    assert "reviews" not in _tables(empty_url)
    columns = {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}
    assert {"review_decision", "reviewed_by", "reviewed_at", "reviewed_hc_mm"}.isdisjoint(columns)
    with get_engine(empty_url).connect() as conn:
        assert conn.execute(text("SELECT sop_instance_uid, hc_mm FROM measurements")).all() == [("1.2.17", 171.5)]


def test_0009_adds_intake_conflicts_and_patient_columns_keeps_rows_and_downgrades(empty_url: str) -> None:
    """From 0008 with a measured row and a report: ``intake_conflicts`` appears, the issuer and birth date columns
    read NULL on the rows kept; a conflict is recorded with both patients' IDs; 0008 again drops them, rows kept."""
    from alembic import command

    from db.conflicts import list_conflicts, record_conflict
    from db.migrate import alembic_config
    from db.tables import ObReportRow

    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0008")
        conn.execute(text("INSERT INTO measurements (sop_instance_uid, frame, model_version, status, hc_mm, "
                          "patient_id, created_at, updated_at) VALUES ('1.2.19', 1, 'v1', 'measured', 171.5, "
                          "'P-1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO ob_reports (sop_instance_uid, study_instance_uid, patient_id, status, "
                          "received_at, created_at, updated_at) VALUES ('1.2.20', '1.2.21', 'P-1', 'parsed', "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    assert "intake_conflicts" not in _tables(empty_url)
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.upgrade(alembic_config(conn), "0009")
    assert current_revision(empty_url) == "0009"
    with session_scope(empty_url) as s:
        assert s.execute(select(Measurement.patient_id, Measurement.issuer_of_patient_id,
                                Measurement.patient_birth_date)).all() == [("P-1", None, None)]
        assert s.execute(select(ObReportRow.issuer_of_patient_id, ObReportRow.patient_birth_date)).all() == [
            (None, None)]
        record_conflict(s, sop_instance_uid="1.2.19", source="live", reason="other_patient", kept_path="/x",
                        patient_id_existing="P-1", patient_id_received="P-2", job_id=7)
    with session_scope(empty_url) as s:
        [conflict] = list_conflicts(s)
        assert (conflict["patient_id_existing"], conflict["patient_id_received"], conflict["job_id"]) == (
            "P-1", "P-2", 7)
        assert conflict["created_at"] is not None
    assert upgrade(empty_url) == head_revision()
    assert schema_differences(get_engine(empty_url)) == []
    dispose_all()
    with get_engine(empty_url).begin() as conn:
        command.downgrade(alembic_config(conn), "0008")
    assert "intake_conflicts" not in _tables(empty_url)
    columns = {c["name"] for c in inspect(get_engine(empty_url)).get_columns("measurements")}
    assert "issuer_of_patient_id" not in columns and "hc_mm" in columns
    with get_engine(empty_url).connect() as conn:
        assert conn.execute(text("SELECT patient_id FROM measurements")).scalars().all() == ["P-1"]
