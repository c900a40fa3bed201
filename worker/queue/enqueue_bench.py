"""``fetalhc bench --enqueue N``: files per second that ``enqueue_files`` records and publishes, on this machine.

A benchmark, never a timed test. The archive is a temporary folder of ``N`` small real DICOM files
(``dicom_io.writer``); its jobs go into the configured database with a source label of their own
(``bench-<hex>``) and their messages to a queue no worker reads (``fetalhc-bench``); both are
deleted afterwards, so nothing of the run is measured or left behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select

from db import Job, session_scope, upgrade
from dicom_io.writer import write_us_image
from worker.core.settings import Settings
from worker.queue.celery_app import app_for
from worker.queue.enqueue import enqueue_files

BENCH_QUEUE = "fetalhc-bench"  # no worker consumes it: the messages are purged after the run


def write_archive(folder: Path, n: int, per_folder: int = 1000) -> None:
    """``n`` small US Image Storage files (64 x 64) under ``folder``, ``per_folder`` to a subfolder.

    One file is written by ``dicom_io.writer`` and copied (enqueueing reads no pixels: only paths count).
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)
    model = write_us_image(folder / "model.dcm.tmp", image, 0.2)
    for i in range(n):
        sub = folder / f"{i // per_folder:04d}"
        if i % per_folder == 0:
            sub.mkdir(exist_ok=True)
        shutil.copyfile(model, sub / f"{i:07d}.dcm")
    Path(model).unlink()


def _purge(settings: Settings, queue: str) -> int:
    """Delete the messages of ``queue`` (the bench's own); returns how many there were."""
    with app_for(settings).connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(queue) or 0)


def bench_enqueue(settings: Settings, n: int, batch: int = 1, keep: bool = False) -> dict[str, Any]:
    """Time ``enqueue_files`` of a generated archive of ``n`` files into the settings' database and broker.

    ``batch``: scans per message (``fetalhc enqueue --batch``). The jobs (source ``bench-<hex>``) and
    the messages (queue ``fetalhc-bench``) are deleted afterwards unless ``keep``.
    """
    if n < 1:
        raise ValueError(f"n={n}: at least 1 file")
    upgrade(settings.database_url)
    source = f"bench-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        t0 = time.perf_counter()
        write_archive(root, n)
        write_s = time.perf_counter() - t0
        paths = (p for p in sorted(root.rglob("*.dcm")))
        try:
            t0 = time.perf_counter()
            summary = enqueue_files(settings, paths, queue=BENCH_QUEUE, source=source, batch=batch)
            seconds = time.perf_counter() - t0
        finally:
            if not keep:
                with session_scope(settings.database_url) as session:
                    recorded = session.scalar(select(func.count()).select_from(Job).where(Job.source == source))
                    session.execute(delete(Job).where(Job.source == source))
                purged = _purge(settings, BENCH_QUEUE)
    report: dict[str, Any] = {
        "files": n, "batch": batch, "database": settings.database_url.split(":", 1)[0].split("+")[0],
        "broker": settings.broker_url.split(":", 1)[0], "seconds": round(seconds, 2),
        "files_per_s": round(n / seconds, 1), "queued": summary.queued, "deferred": summary.deferred,
        "archive_write_s": round(write_s, 2), "source": source,
    }
    if not keep:
        report.update({"jobs_deleted": recorded, "messages_purged": purged})
    return report
