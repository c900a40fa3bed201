"""``watch`` against what is not a regular file (issue 21, item 9 and a low item): a FIFO, a symlink out of the
folder, a symlink inside it, a socket, and a file over FETALHC_MAX_INSTANCE_MB.

Before, a FIFO hung the watcher in ``open`` (and a real file behind it was never taken) and a symlink was followed
to a file outside the folder. Each poll here runs in a thread with a deadline: it must return, take the real file,
and move each of the others aside unopened (the file the outside link points to is never read or moved).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from db import Job, session_scope, upgrade
from tests.worker.ingest_support import ingest_settings, tiny_us  # noqa: F401
from worker.core.settings import Settings
from worker.ingest.watch import ASIDE, DropFolderWatcher


def _poll_within(watcher: DropFolderWatcher, seconds: float) -> None:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (watcher.poll(), done.set()), daemon=True)
    thread.start()
    assert done.wait(seconds), "the watcher blocked"


def test_fifos_sockets_and_symlinks_are_set_aside_unopened_and_real_files_taken(
        ingest_settings: Settings, tmp_path: Path, redis_url: str) -> None:
    upgrade(ingest_settings.database_url)
    folder = tmp_path / "drop"
    folder.mkdir()
    outside = tiny_us(tmp_path / "elsewhere" / "secret.dcm", seed=7, patient_id="PHI-OUTSIDE")
    os.mkfifo(folder / "a_fifo.dcm")  # sorted first: before, the watcher hung here
    os.symlink(outside, folder / "b_link_out.dcm")
    real = tiny_us(folder / "c_real.dcm", seed=1)
    os.symlink(real, folder / "d_link_in.dcm")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(folder / "e_socket.dcm"))
    big = folder / "f_big.dcm"
    big.write_bytes(bytes(3 << 20))
    uid = str(pydicom.dcmread(real).SOPInstanceUID)
    watcher = DropFolderWatcher(ingest_settings.replace(max_instance_mb=2), folder, settle_s=0)
    try:
        _poll_within(watcher, 10)
        _poll_within(watcher, 10)
    finally:
        unix.close()
    with session_scope(ingest_settings.database_url) as s:
        jobs = list(s.scalars(select(Job)))
    assert [j.sop_instance_uid for j in jobs] == [uid]  # only the real file
    assert not real.exists()
    rejected = sorted(p.name for p in (folder / ASIDE / "rejected").iterdir())
    assert rejected == ["a_fifo.dcm", "b_link_out.dcm", "d_link_in.dcm", "e_socket.dcm", "f_big.dcm"]
    assert (folder / ASIDE / "rejected" / "a_fifo.dcm").is_fifo()
    assert (folder / ASIDE / "rejected" / "b_link_out.dcm").is_symlink()
    assert outside.exists()  # the file outside the folder was neither taken nor moved
    assert not list(ingest_settings.spool_dir.glob("*secret*"))
    assert watcher.counts.queued + watcher.counts.deferred == 1 and watcher.counts.rejected == 5
    assert not list((ingest_settings.spool_dir / ".incoming").iterdir())  # the staging copy is gone


@pytest.mark.parametrize("swap", ["fifo", "symlink"])
def test_a_file_swapped_for_a_fifo_or_link_after_its_lstat_is_not_opened_blocking(
        ingest_settings: Settings, tmp_path: Path, swap: str) -> None:
    """The open itself is O_NOFOLLOW | O_NONBLOCK and checked with fstat (no window between lstat and open)."""
    upgrade(ingest_settings.database_url)
    folder = tmp_path / "drop"
    folder.mkdir()
    path = folder / "x.dcm"
    if swap == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(tiny_us(tmp_path / "outside.dcm"), path)
    watcher = DropFolderWatcher(ingest_settings, folder, settle_s=0)
    done = threading.Event()
    threading.Thread(target=lambda: (watcher._take(path), done.set()), daemon=True).start()
    assert done.wait(10), "the open blocked"
    assert (folder / ASIDE / "rejected" / "x.dcm").exists() or (folder / ASIDE / "rejected" / "x.dcm").is_symlink()
