"""Backfill from a folder tree: DICOMDIR-aware, date range, skips, resumability, bounds, CLI summary."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from sqlalchemy import select, update

from db import Job, JobStatus, session_scope, upgrade, upsert_measurement
from tests.worker.ingest_support import ingest_settings, queued, tiny_us  # noqa: F401
from worker.backfill import current_model_version, run_backfill
from worker.backfill.folder import FolderSource
from worker.backfill.runner import weights_path
from worker.core.settings import Settings

D1, D2, D3 = dt.date(2025, 1, 10), dt.date(2025, 2, 20), dt.date(2025, 6, 1)


def _archive(root: Path) -> dict[str, str]:
    """Three loose US files (three dates), a CT, a text file, and a DICOMDIR set with two US files."""
    uids = {}
    for name, day, seed in (("a", D1, 1), ("b", D2, 2), ("c", D3, 3)):
        path = tiny_us(root / "loose" / day.isoformat() / f"{name}.dcm", day, seed=seed)
        uids[name] = str(pydicom.dcmread(path).SOPInstanceUID)
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), root / "loose" / "ct.dcm")
    (root / "loose" / "readme.txt").write_text("exported by the PACS")
    staging = root / "staging"
    fileset = FileSet()
    for name, seed in (("m1", 4), ("m2", 5)):
        ds = pydicom.dcmread(tiny_us(staging / f"{name}.dcm", D2, seed=seed))
        uids[name] = str(ds.SOPInstanceUID)
        ds.StudyTime = "101500"  # Type 1 in a DICOMDIR STUDY record (PS3.3 F.5)
        fileset.add(ds)
    fileset.write(root / "media")
    shutil.rmtree(staging)
    return uids


def _jobs(url: str) -> list[Job]:
    with session_scope(url) as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_folder_backfill_queues_ultrasound_on_backfill(ingest_settings: Settings, tmp_path: Path,
                                                        redis_url: str) -> None:
    uids = _archive(tmp_path / "archive")
    summary = run_backfill(ingest_settings, FolderSource(tmp_path / "archive"), progress=False)

    assert (summary.found, summary.queued, summary.failed) == (5, 5, 0)
    assert summary.skipped == {"not_dicom": 1, "not_ultrasound": 1}
    jobs = _jobs(ingest_settings.database_url)
    assert {j.sop_instance_uid for j in jobs} == set(uids.values())
    assert {(j.source, j.queue, j.status) for j in jobs} == {("backfill", "backfill", "queued")}
    assert all(Path(j.path).is_file() and Path(j.path).is_relative_to(tmp_path / "archive") for j in jobs)
    assert [m["job_id"] for m in queued(redis_url, "backfill")] == [j.id for j in jobs]
    assert queued(redis_url, "live") == []
    # DICOMDIR records are used: its media files are found though their names are not *.dcm
    assert sum(1 for j in jobs if "/media/" in j.path) == 2


def test_date_range_and_dry_run(ingest_settings: Settings, tmp_path: Path, redis_url: str) -> None:
    _archive(tmp_path / "archive")
    summary = run_backfill(ingest_settings, FolderSource(tmp_path / "archive"), since=dt.date(2025, 2, 1),
                           until=dt.date(2025, 3, 1), dry_run=True, progress=False)

    assert (summary.found, summary.would_queue, summary.queued) == (3, 3, 0)  # b and the two DICOMDIR files
    assert summary.skipped["out_of_range"] == 2
    assert _jobs(ingest_settings.database_url) == [] and queued(redis_url, "backfill") == []


def test_rerun_skips_in_flight_and_measured_then_requeues_nothing_twice(ingest_settings: Settings,
                                                                       tmp_path: Path, redis_url: str) -> None:
    uids = _archive(tmp_path / "archive")
    source = tmp_path / "archive" / "loose"
    first = run_backfill(ingest_settings, FolderSource(source), progress=False)
    assert first.queued == 3

    # Interrupted run resumed: everything still queued is in flight, nothing is queued twice.
    again = run_backfill(ingest_settings, FolderSource(source), progress=False)
    assert (again.queued, again.skipped["in_flight"]) == (0, 3)

    # 'a' measured by the current model, 'b' failed for good: only 'b' (no finished row) comes back.
    version = current_model_version(ingest_settings)
    assert version is not None
    with session_scope(ingest_settings.database_url) as s:
        s.execute(update(Job).values(status=JobStatus.DONE.value))
        upsert_measurement(s, {"sop_instance_uid": uids["a"], "frame": 1, "model_version": version,
                               "status": "measured", "hc_mm": 180.0})
        upsert_measurement(s, {"sop_instance_uid": uids["c"], "frame": 1, "model_version": "an-older-model",
                               "status": "measured", "hc_mm": 180.0})
    third = run_backfill(ingest_settings, FolderSource(source), progress=False)
    assert (third.queued, third.skipped["measured"]) == (2, 1)  # c was measured by another model only
    assert len(queued(redis_url, "backfill")) == 5


def test_model_version_is_the_shipped_weights_hash(ingest_settings: Settings) -> None:
    from models.segmentation.weights import SHIPPED_WEIGHTS, file_sha256

    assert weights_path(ingest_settings) == SHIPPED_WEIGHTS
    assert current_model_version(ingest_settings) == file_sha256(SHIPPED_WEIGHTS)


def test_waits_while_backfill_in_flight_is_at_the_bound(ingest_settings: Settings, tmp_path: Path) -> None:
    upgrade(ingest_settings.database_url)
    with session_scope(ingest_settings.database_url) as s:
        from db import create_job

        ids = [create_job(s, f"/old/{i}.dcm", "backfill", "backfill") for i in range(2)]
        create_job(s, "/live.dcm", "live", "live")  # live jobs never count against backfill's bound
    tiny_us(tmp_path / "archive" / "x.dcm")
    result = {}
    runner = threading.Thread(target=lambda: result.update(s=run_backfill(
        ingest_settings, FolderSource(tmp_path / "archive"), max_in_flight=2, progress=False, poll_s=0.05)))
    runner.start()
    time.sleep(0.4)
    assert runner.is_alive() and len(_jobs(ingest_settings.database_url)) == 3  # waiting, nothing queued

    with session_scope(ingest_settings.database_url) as s:
        s.execute(update(Job).where(Job.id == ids[0]).values(status="done"))
    runner.join(timeout=10)
    assert not runner.is_alive() and result["s"].queued == 1


def test_rate_limits_scans_per_second(ingest_settings: Settings, tmp_path: Path) -> None:
    for i in range(3):
        tiny_us(tmp_path / "archive" / f"{i}.dcm", seed=i)
    t0 = time.monotonic()
    summary = run_backfill(ingest_settings, FolderSource(tmp_path / "archive"), rate=10, progress=False)
    assert summary.queued == 3 and time.monotonic() - t0 >= 0.2  # 3 scans at 10/s: two gaps of 0.1 s


def test_cli_backfill_prints_a_summary(ingest_settings: Settings, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    _archive(tmp_path / "archive")
    assert main(["backfill", str(tmp_path / "archive"), "--from", "2025-01-01", "--to", "20250301",
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["found"], out["queued"], out["skipped"], out["failed"]) == (4, 4, 3, 0)
    assert main(["backfill", str(tmp_path / "archive"), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("found 5, queued 1, skipped 6") and "in flight 4" in line
    assert main(["backfill", str(tmp_path / "missing"), "--no-progress"]) == 2


def test_dicomdir_records_spare_opening_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _archive(tmp_path / "archive")
    opened: list[Path] = []
    original = FolderSource._from_file

    def spy(self: FolderSource, path: Path, skip):  # type: ignore[no-untyped-def]
        opened.append(path)
        return original(self, path, skip)

    monkeypatch.setattr(FolderSource, "_from_file", spy)
    found = list(FolderSource(tmp_path / "archive" / "media").candidates(None, None, lambda reason: None))
    assert len(found) == 2 and {c.study_date for c in found} == {D2} and opened == []


def test_cli_backfill_unreachable_pacs_is_a_clear_error(ingest_settings: Settings,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.worker.ingest_support import free_port
    from worker.cli import main

    assert main(["backfill", f"dimse://NOPACS@127.0.0.1:{free_port()}", "--no-progress"]) == 2
    assert "was not accepted" in capsys.readouterr().err
    assert main(["backfill", "dimse://TOO_LONG_AE_TITLE_X@host:1", "--no-progress"]) == 2


def test_dicomweb_search_failure_is_a_retrieve_error() -> None:
    from requests.exceptions import ConnectionError as RequestsConnectionError

    from worker.backfill.dicomweb import DicomwebSource
    from worker.backfill.dimse import RetrieveError

    class Down:
        def search_for_studies(self, **kwargs: object) -> list:
            raise RequestsConnectionError("refused")

    with pytest.raises(RetrieveError, match="QIDO-RS search failed"):
        list(DicomwebSource("http://pacs/dicom-web", Path("/nonexistent"), client=Down()).candidates(
            None, None, lambda reason: None))


def test_dicomweb_credentials_are_checked_and_reach_the_session(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.backfill.dicomweb import dicomweb_session
    from worker.core.settings import Settings

    for key in ("USER", "PASSWORD", "TOKEN", "CA_BUNDLE"):
        monkeypatch.delenv(f"FETALHC_DICOMWEB_{key}", raising=False)
    plain = dicomweb_session(Settings())
    assert plain.auth is None and "Authorization" not in plain.headers and plain.verify is True

    monkeypatch.setenv("FETALHC_DICOMWEB_TOKEN", "tok-123")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("FETALHC_DICOMWEB_CA_BUNDLE", str(ca))
    settings = Settings()
    session = dicomweb_session(settings)
    assert session.headers["Authorization"] == "Bearer tok-123" and session.verify == str(ca)
    assert "tok-123" not in repr(settings)

    monkeypatch.setenv("FETALHC_DICOMWEB_USER", "alice")
    with pytest.raises(ValueError, match="go together"):
        Settings()
    monkeypatch.setenv("FETALHC_DICOMWEB_PASSWORD", "pw")
    with pytest.raises(ValueError, match="not both"):
        Settings()
    monkeypatch.delenv("FETALHC_DICOMWEB_TOKEN")
    assert dicomweb_session(Settings()).auth == ("alice", "pw")
    monkeypatch.setenv("FETALHC_DICOMWEB_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="CA_BUNDLE=.*is not a file"):
        Settings()
