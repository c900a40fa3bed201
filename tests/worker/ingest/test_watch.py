"""The drop-folder watcher: files taken once unchanged for the settle time; others set aside."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from db import Job, session_scope, upgrade
from tests.worker.ingest_support import ingest_settings, queued, tiny_us  # noqa: F401
from worker.ingest.watch import ASIDE, DropFolderWatcher
from worker.core.settings import Settings


class Clock:
    """A hand-wound monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def drop(ingest_settings: Settings, tmp_path: Path) -> tuple[Settings, Path, Clock, DropFolderWatcher]:
    upgrade(ingest_settings.database_url)
    folder = tmp_path / "drop"
    folder.mkdir()
    clock = Clock()
    return ingest_settings, folder, clock, DropFolderWatcher(ingest_settings, folder, settle_s=5.0, clock=clock)


def _jobs(url: str) -> list[Job]:
    with session_scope(url) as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_file_is_taken_only_after_it_settles(drop: tuple, redis_url: str) -> None:
    settings, folder, clock, watcher = drop
    src = tiny_us(folder / "sub" / "scan.dcm", dt.date(2026, 1, 5))
    uid = str(pydicom.dcmread(src).SOPInstanceUID)

    watcher.poll()
    clock.now += 4.0
    watcher.poll()
    assert src.exists() and _jobs(settings.database_url) == []  # still settling

    clock.now += 1.5
    counts = watcher.poll()

    assert counts.queued == 1 and not src.exists()  # taken, removed from the drop folder
    [job] = _jobs(settings.database_url)
    spooled = settings.spool_dir / f"{uid}.dcm"
    assert (job.source, job.queue, job.status, job.path, job.sop_instance_uid) == (
        "watch", "live", "queued", str(spooled), uid)
    assert [m["job_id"] for m in queued(redis_url, "live")] == [job.id]


def test_a_growing_file_waits_until_it_stops_changing(drop: tuple) -> None:
    settings, folder, clock, watcher = drop
    src = tiny_us(folder / "scan.dcm")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])  # a copy in progress
    watcher.poll()
    clock.now += 4.0
    src.write_bytes(data)  # still being written
    os.utime(src, ns=(1, 2))  # a new signature even on coarse-mtime filesystems
    watcher.poll()
    clock.now += 4.0
    assert watcher.poll().queued == 0 and src.exists()
    clock.now += 1.5
    assert watcher.poll().queued == 1


def test_non_dicom_and_other_classes_set_aside_hidden_left_alone(drop: tuple) -> None:
    settings, folder, clock, watcher = drop
    (folder / "notes.txt").write_text("not a scan")
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), folder / "ct.dcm")
    (folder / ".partial.dcm.tmp").write_bytes(b"half")
    watcher.poll()
    clock.now += 6
    counts = watcher.poll()

    assert (counts.rejected, counts.ignored, counts.queued) == (1, 1, 0)
    assert (folder / ASIDE / "rejected" / "notes.txt").is_file()
    assert (folder / ASIDE / "ignored" / "ct.dcm").is_file()
    assert (folder / ".partial.dcm.tmp").is_file()
    assert _jobs(settings.database_url) == []


def test_database_down_leaves_the_file_for_the_next_poll(drop: tuple) -> None:
    settings, folder, clock, _ = drop
    broken = settings.replace(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none"
                                 "?connect_timeout=1")
    watcher = DropFolderWatcher(broken, folder, settle_s=0, clock=clock)
    src = tiny_us(folder / "scan.dcm")
    counts = watcher.poll()
    assert (counts.queued, counts.retry) == (0, 1) and src.exists()


def test_cli_watch_once_takes_settled_files(ingest_settings: Settings, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    folder = tmp_path / "drop"
    tiny_us(folder / "a.dcm")
    tiny_us(folder / "b.dcm", seed=1)
    assert main(["watch", str(folder), "--once", "--settle", "0", "--json"]) == 0
    assert '"queued": 2' in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == []
