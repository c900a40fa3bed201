"""The drop-folder watcher (``fetalhc watch DIR``): polls a folder, takes files once they stop changing.

A file is complete when its size and modification time have not changed for ``settle_s`` seconds.
Complete ultrasound files are copied atomically into the spool (named by SOP Instance UID),
recorded and queued on ``live`` exactly like a C-STORE, then removed from the drop folder.
Files that are not DICOM, or not ultrasound, are moved aside to ``DIR/.fetalhc/rejected`` or
``DIR/.fetalhc/ignored`` (never deleted). Hidden names (``.*``) are not looked at, so a sender can
write ``.name.tmp`` and rename it when done. Polling only: no extra dependency, works on NFS/SMB.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import SQLAlchemyError

from worker.core.settings import Settings
from worker.ingest.intake import accept_instance, is_intake_class
from worker.ingest.spool import is_valid_uid
from worker.queue.celery_app import LIVE_QUEUE

log = logging.getLogger(__name__)

ASIDE = ".fetalhc"


@dataclass
class WatchCounts:
    """Totals since the watcher started."""

    queued: int = 0
    deferred: int = 0  # recorded, broker down: the sweeper queues them
    ignored: int = 0  # DICOM but not ultrasound
    rejected: int = 0  # not DICOM, or no usable SOP Instance UID
    retry: int = 0  # could not be taken now (database or spool trouble); tried again next poll


class DropFolderWatcher:
    """Poll ``folder`` (recursively) and ingest each file once it is complete.

    Example:
        >>> watcher = DropFolderWatcher(settings, Path("/srv/drop"))  # doctest: +SKIP
        >>> watcher.poll()  # one pass; ``run()`` loops until stopped  # doctest: +SKIP
    """

    def __init__(self, settings: Settings, folder: Path, settle_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"watch folder {folder} does not exist or is not a folder")
        self.settings = settings
        self.folder = folder
        self.settle_s = settings.watch_settle_s if settle_s is None else settle_s
        self.clock = clock
        self.counts = WatchCounts()
        # path -> ((size, mtime_ns), when that signature was first seen)
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}

    def poll(self) -> WatchCounts:
        """One pass over the folder: ingest every file that has been still for ``settle_s``."""
        now = self.clock()
        present: set[Path] = set()
        for path in self._files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            present.add(path)
            signature = (st.st_size, st.st_mtime_ns)
            previous = self._seen.get(path)
            if previous is None or previous[0] != signature:
                self._seen[path] = (signature, now)
                if self.settle_s > 0:
                    continue
            elif now - previous[1] < self.settle_s:
                continue
            if self._take(path):
                self._seen.pop(path, None)
                present.discard(path)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return self.counts

    def run(self, interval_s: float = 1.0, stop: threading.Event | None = None) -> None:
        """Poll every ``interval_s`` seconds until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        from db import upgrade

        upgrade(self.settings.database_url)
        log.info("watching %s (files complete after %.1f s unchanged)", self.folder, self.settle_s)
        while not stop.is_set():
            self.poll()
            stop.wait(interval_s)

    def _files(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
        return found

    def _take(self, path: Path) -> bool:
        """Ingest one complete file; True when it left the drop folder."""
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, IndexError, OSError):
            return self._aside(path, "rejected")
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
        sop_uid = str(ds.get("SOPInstanceUID", "")).strip()
        if not is_intake_class(sop_class):  # ultrasound, or an SR (an OB-GYN report is recorded by the worker)
            return self._aside(path, "ignored")
        if not is_valid_uid(sop_uid):
            return self._aside(path, "rejected")
        try:
            intake = accept_instance(self.settings, sop_uid, path, "watch", LIVE_QUEUE)  # copied in chunks
        except (OSError, SQLAlchemyError) as exc:
            self.counts.retry += 1
            log.warning("could not take a file now (%s); trying again on the next poll", type(exc).__name__)
            return False
        if intake.queued:
            self.counts.queued += 1
        else:
            self.counts.deferred += 1
        path.unlink(missing_ok=True)
        return True

    def _aside(self, path: Path, kind: str) -> bool:
        target_dir = self.folder / ASIDE / kind
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        n = 1
        while target.exists():
            target = target_dir / f"{path.name}.{n}"
            n += 1
        shutil.move(str(path), target)
        if kind == "ignored":
            self.counts.ignored += 1
        else:
            self.counts.rejected += 1
        log.info("moved a file that is %s to %s", "not ultrasound" if kind == "ignored" else "not usable DICOM",
                 target_dir)
        return True
