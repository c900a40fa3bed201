"""Spool retention: old finished scans' files deleted, everything still needed or not ours left alone."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db import Job, JobStatus, create_job, session_scope, set_job_status, upgrade
from tests.services import PrivateRedis, private_redis  # noqa: F401 - fixture
from tests.worker.ingest_support import job_row
from worker.ingest.spool import write_instance
from worker.core.settings import Settings, get_settings
from worker.ops.spool_retention import ORPHAN_MARGIN, PRUNED_NOTE, PruneSummary, prune_spool

DAY = 86400.0
RETENTION = dt.timedelta(days=30)
_uid_counter = iter(range(1, 10_000))


@pytest.fixture()
def settings(fetalhc_env: pytest.MonkeyPatch) -> Settings:
    settings = get_settings()
    upgrade(settings.database_url)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _age(path: Path, days: float) -> Path:
    """Set ``path``'s modification time ``days`` ago (the link itself for a symlink)."""
    t = dt.datetime.now(dt.timezone.utc).timestamp() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)
    return path


def _file(path: Path, data: bytes, age_days: float) -> Path:
    """A file with ``data``, ``age_days`` old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _age(path, age_days)


def _spooled(settings: Settings, age_days: float, size: int = 1000) -> Path:
    """An instance written to the spool as the listener does (``<uid>.dcm``), ``age_days`` old."""
    uid = f"1.2.826.0.1.3680043.8.498.{next(_uid_counter)}"
    return _age(write_instance(settings.spool_dir, uid, b"\0" * size), age_days)


def _job(settings: Settings, path: Path, status: JobStatus, finished_days_ago: float = 0.0, source: str = "live",
         reason: str | None = None) -> int:
    """A job on ``path`` (as intake records it), in ``status``, finished (or last updated) that long ago."""
    uid = path.name.removesuffix(".dcm")
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=finished_days_ago)
    with session_scope(settings.database_url) as s:
        job_id = create_job(s, str(path), source, "live", sop_instance_uid=uid)
        set_job_status(s, job_id, status, reason=reason, detail="why it failed" if reason else None)
        values = {"updated_at": when, "received_at": when - dt.timedelta(minutes=1)}
        if status.value in ("done", "needs_review", "failed"):
            values["finished_at"] = when
        s.execute(update(Job).where(Job.id == job_id).values(**values))
    return job_id


def _details(settings: Settings) -> dict[int, tuple[str, str | None, str | None]]:
    with session_scope(settings.database_url) as s:
        return {j.id: (j.status, j.reason, j.detail) for j in s.scalars(select(Job))}


def test_old_finished_jobs_lose_their_file_and_keep_their_outcome(settings: Settings) -> None:
    done = _spooled(settings, 40)
    review = _spooled(settings, 40)
    failed = _spooled(settings, 40, size=500)
    done_id = _job(settings, done, JobStatus.DONE, 35)
    review_id = _job(settings, review, JobStatus.NEEDS_REVIEW, 35)
    failed_id = _job(settings, failed, JobStatus.FAILED, 31, reason="uncalibrated")
    recent = _spooled(settings, 40)
    recent_id = _job(settings, recent, JobStatus.DONE, 29)  # finished within the retention

    summary = prune_spool(settings, RETENTION)

    assert not done.exists() and not review.exists() and not failed.exists()
    assert recent.exists()
    assert (summary.files, summary.bytes, summary.jobs_marked, summary.kept_in_use) == (3, 2500, 3, 1)
    assert (summary.orphans, summary.errors) == (0, 0)
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert job_row(settings, done_id).status == "done" and job_row(settings, done_id).detail == f"{PRUNED_NOTE} {today}"
    assert job_row(settings, review_id).status == "needs_review"
    job = job_row(settings, failed_id)
    assert (job.status, job.reason, job.detail) == ("failed", "uncalibrated", f"why it failed; {PRUNED_NOTE} {today}")
    assert job_row(settings, recent_id).detail is None
    assert prune_spool(settings, RETENTION).files == 0  # nothing left to do; no job marked twice
    assert job_row(settings, done_id).detail == f"{PRUNED_NOTE} {today}"


def test_files_of_unfinished_jobs_are_kept_however_old(settings: Settings) -> None:
    files = {status: _spooled(settings, 400) for status in (JobStatus.RECEIVED, JobStatus.QUEUED, JobStatus.RUNNING)}
    for status, path in files.items():
        _job(settings, path, status, 300)  # stuck for most of a year: still its file

    summary = prune_spool(settings, RETENTION)

    assert all(p.exists() for p in files.values())
    assert (summary.files, summary.orphans, summary.kept_in_use) == (0, 0, 3)
    assert all(detail is None for _, _, detail in _details(settings).values())


def test_an_instance_sent_again_keeps_its_file(settings: Settings) -> None:
    rewritten = _spooled(settings, 40)
    _job(settings, rewritten, JobStatus.DONE, 35)
    write_instance(settings.spool_dir, rewritten.name.removesuffix(".dcm"), b"new")  # sent again; job row next
    requeued = _spooled(settings, 40)
    _job(settings, requeued, JobStatus.DONE, 35)
    _job(settings, requeued, JobStatus.QUEUED, 0.01)  # the same file, a new job not measured yet

    summary = prune_spool(settings, RETENTION)

    assert rewritten.read_bytes() == b"new" and requeued.exists()
    assert (summary.files, summary.orphans, summary.kept_in_use) == (0, 0, 1)


def test_nothing_outside_the_spool_is_touched(settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    backfilled = _file(archive / "1.2.3.4.dcm", b"a", 400)
    _job(settings, backfilled, JobStatus.DONE, 300, source="backfill")  # an archive file: never ours
    watched = _file(archive / "watched.dcm", b"w", 400)
    climbing = settings.spool_dir / ".." / "archive" / "watched.dcm"  # a path that climbs out of the spool
    _job(settings, climbing, JobStatus.DONE, 300, source="watch")
    target = _file(archive / "target.dcm", b"t" * 10, 400)
    link = settings.spool_dir / "1.2.3.5.dcm"
    link.symlink_to(target)
    _age(link, 400)
    _job(settings, link, JobStatus.DONE, 300)  # a job on the link itself
    (settings.spool_dir / "elsewhere").symlink_to(archive, target_is_directory=True)

    summary = prune_spool(settings, RETENTION)

    assert backfilled.read_bytes() == b"a" and watched.read_bytes() == b"w" and target.read_bytes() == b"t" * 10
    assert link.is_symlink() and (settings.spool_dir / "elsewhere").is_symlink()
    assert (summary.files, summary.orphans, summary.bytes, summary.orphan_bytes) == (0, 0, 0, 0)
    assert summary.skipped == 2  # the file link and the folder link
    assert all(detail is None for _, _, detail in _details(settings).values())


def test_orphans_go_after_a_margin_and_writes_in_progress_stay(settings: Settings) -> None:
    margin_days = ORPHAN_MARGIN.total_seconds() / DAY
    old_orphan = _spooled(settings, 30 + margin_days + 1, size=700)  # a crash between file and job row
    young_orphan = _spooled(settings, 30 + margin_days / 2)  # older than the retention, not the margin
    fresh_orphan = _spooled(settings, 0)
    spool = settings.spool_dir
    writing = _file(spool / ".1.2.3.9.dcm.abc123.tmp", b"partial", 0)  # write_atomic's temporary file, being written
    stale_tmp = _file(spool / ".1.2.3.8.dcm.def456.tmp", b"xx", 400)  # left by a crash
    other = _file(spool / "README.txt", b"keep", 400)  # not a spool file: someone else's
    hidden = _file(spool / ".keep", b"", 400)
    unsent_sr = _file(spool / "sr" / "1.2.3.10.dcm", b"s", 400)  # the SR outbox: waiting for the PACS
    nested = _file(spool / "sub" / "deeper" / "1.2.3.11.dcm", b"n", 400)
    (spool / "empty").mkdir()
    (spool / "api").mkdir()  # the API makes it on demand: kept even when empty

    summary = prune_spool(settings, RETENTION)

    assert not old_orphan.exists() and not stale_tmp.exists() and not nested.exists()
    assert young_orphan.exists() and fresh_orphan.exists() and writing.exists()
    assert other.exists() and hidden.exists() and unsent_sr.exists()
    assert (summary.orphans, summary.orphan_bytes, summary.files) == (3, 700 + 2 + 1, 0)
    assert not (spool / "sub").exists() and not (spool / "empty").exists()
    assert (spool / "api").is_dir() and spool.is_dir()
    assert summary.folders == 3  # sub/deeper, sub, empty


def test_a_dry_run_deletes_nothing_and_reports_the_same_counts(settings: Settings) -> None:
    old = [_spooled(settings, 40) for _ in range(3)]
    ids = [_job(settings, p, JobStatus.DONE, 35) for p in old]
    orphan = _spooled(settings, 100)
    nested = _file(settings.spool_dir / "sub" / "1.2.3.12.dcm", b"n", 100)
    kept = _spooled(settings, 40)
    _job(settings, kept, JobStatus.RUNNING, 35)
    before = _details(settings)

    dry = prune_spool(settings, RETENTION, dry_run=True)

    assert all(p.exists() for p in old) and orphan.exists() and nested.exists()
    assert _details(settings) == before
    real = prune_spool(settings, RETENTION)
    assert dry.dry_run and not real.dry_run
    assert {**dry.as_dict(), "dry_run": False} == real.as_dict()
    assert (real.files, real.orphans, real.jobs_marked, real.kept_in_use, real.folders) == (3, 2, 3, 1, 1)
    assert not any(p.exists() for p in old) and not orphan.exists() and kept.exists()
    assert all(PRUNED_NOTE in (job_row(settings, i).detail or "") for i in ids)


def test_many_files_are_judged_in_batches(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.ops.spool_retention as retention

    monkeypatch.setattr(retention, "BATCH", 4)
    old = [_spooled(settings, 40) for _ in range(10)]
    for i, path in enumerate(old):
        _job(settings, path, JobStatus.DONE if i % 2 else JobStatus.QUEUED, 35)

    summary = prune_spool(settings, RETENTION)

    assert [p.exists() for p in old] == [i % 2 == 0 for i in range(10)]
    assert (summary.files, summary.jobs_marked, summary.kept_in_use) == (5, 5, 5)


def test_pruning_on_postgresql(fetalhc_env: pytest.MonkeyPatch, pg_url: str) -> None:
    fetalhc_env.setenv("FETALHC_DATABASE_URL", pg_url)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    old, recent, running = _spooled(settings, 40), _spooled(settings, 40), _spooled(settings, 40)
    old_id = _job(settings, old, JobStatus.FAILED, 31, reason="not_dicom")
    _job(settings, recent, JobStatus.DONE, 2)
    _job(settings, running, JobStatus.RUNNING, 100)

    summary = prune_spool(settings, RETENTION)

    assert not old.exists() and recent.exists() and running.exists()
    assert (summary.files, summary.jobs_marked, summary.kept_in_use) == (1, 1, 2)
    job = job_row(settings, old_id)
    assert (job.status, job.reason) == ("failed", "not_dicom")
    assert job.detail == f"why it failed; {PRUNED_NOTE} {dt.datetime.now(dt.timezone.utc).date().isoformat()}"


def test_the_retention_setting_is_validated(fetalhc_env: pytest.MonkeyPatch) -> None:
    assert Settings().spool_retention_days == 0.0  # keep for ever unless asked
    for bad in ("-1", "nan", "inf", "thirty"):
        fetalhc_env.setenv("FETALHC_SPOOL_RETENTION_DAYS", bad)
        with pytest.raises(ValueError, match="FETALHC_SPOOL_RETENTION_DAYS"):
            Settings()
    fetalhc_env.setenv("FETALHC_SPOOL_RETENTION_DAYS", "0.5")
    assert Settings().spool_retention_days == 0.5


def test_the_sweep_prunes_only_when_retention_is_set(fetalhc_env: pytest.MonkeyPatch,
                                                    private_redis: PrivateRedis) -> None:
    import worker.queue.celery_app
    from worker.ops.housekeeping import PeriodicSweeper

    fetalhc_env.setenv("FETALHC_BROKER_URL", private_redis.url)
    fetalhc_env.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    old = _spooled(settings, 400)
    _job(settings, old, JobStatus.DONE, 300)
    orphan = _spooled(settings, 400)

    assert settings.spool_retention_days == 0
    PeriodicSweeper(settings).tick()
    assert PeriodicSweeper(settings).prune_once() is None
    assert old.exists() and orphan.exists()  # retention 0: kept for ever

    fetalhc_env.setenv("FETALHC_SPOOL_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    first, second = PeriodicSweeper(get_settings()), PeriodicSweeper(get_settings())
    first.tick()
    assert not old.exists() and not orphan.exists()
    _job(settings, _spooled(settings, 400), JobStatus.DONE, 300)
    assert second.prune_once() is None  # one prune an hour across workers


def test_cli_prints_counts_as_json(settings: Settings, capsys: pytest.CaptureFixture[str],
                                   fetalhc_env: pytest.MonkeyPatch) -> None:
    from worker.cli import main

    old = _spooled(settings, 40, size=1234)
    _job(settings, old, JobStatus.DONE, 35)

    assert main(["spool", "prune"]) == 2  # no retention set and none given
    assert "FETALHC_SPOOL_RETENTION_DAYS" in capsys.readouterr().err
    assert main(["spool", "prune", "--older-than-days", "30", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert old.exists()
    fetalhc_env.setenv("FETALHC_SPOOL_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    assert main(["spool", "prune", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not old.exists()
    assert dry == {**report, "dry_run": True}
    assert report == {**PruneSummary(files=1, bytes=1234, jobs_marked=1).as_dict(), "older_than_days": 30.0}
    assert main(["spool", "prune", "--older-than-days", "30"]) == 0
    assert capsys.readouterr().out.startswith("deleted 0 spool files")


def test_logs_carry_counts_not_paths(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    old = _spooled(settings, 40)
    _job(settings, old, JobStatus.DONE, 35)

    with caplog.at_level("DEBUG", logger="worker.ops.spool_retention"):
        prune_spool(settings, RETENTION)

    assert caplog.records and "1 files of finished jobs" in caplog.text
    assert old.name.removesuffix(".dcm") not in caplog.text and str(settings.spool_dir) not in caplog.text


def test_a_pruned_job_run_again_fails_as_missing_file(settings: Settings) -> None:
    import torch

    from worker.queue.tasks import measure

    old = _spooled(settings, 40)
    job_id = _job(settings, old, JobStatus.DONE, 35)
    prune_spool(settings, RETENTION)
    with session_scope(settings.database_url) as s:  # an operator sends it again
        set_job_status(s, job_id, JobStatus.QUEUED)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = measure.run(job_id, str(old), None)
    finally:
        torch.set_num_threads(threads)

    assert (result["status"], result["reason"]) == ("failed", "missing_file")
    job = job_row(settings, job_id)
    assert (job.status, job.reason) == ("failed", "missing_file")


def test_a_job_that_spells_the_path_otherwise_still_holds_its_file(settings: Settings) -> None:
    old = _spooled(settings, 400)
    with session_scope(settings.database_url) as s:  # e.g. recorded before the spool folder's setting changed
        job_id = create_job(s, f"{settings.spool_dir}/./{old.name}", "live", "live",
                            sop_instance_uid=old.name.removesuffix(".dcm"))
        set_job_status(s, job_id, JobStatus.QUEUED)

    summary = prune_spool(settings, RETENTION)

    assert old.exists() and (summary.orphans, summary.kept_in_use) == (0, 1)


def test_a_file_written_again_during_the_prune_is_kept(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.ops.spool_retention as retention

    old = _spooled(settings, 40)
    _job(settings, old, JobStatus.DONE, 35)
    real_scope = retention.session_scope

    def resent_meanwhile(url: str):  # type: ignore[no-untyped-def]
        write_instance(settings.spool_dir, old.name.removesuffix(".dcm"), b"sent again")
        return real_scope(url)

    monkeypatch.setattr(retention, "session_scope", resent_meanwhile)
    summary = prune_spool(settings, RETENTION)

    assert old.read_bytes() == b"sent again" and summary.files == 0 and summary.jobs_marked == 0
