"""The drop-folder watcher (``fetalhc watch DIR``): polls a folder, takes files once they stop changing.

A file is complete when its size and modification time have not changed for ``settle_s`` seconds.
Complete ultrasound files are copied atomically into the spool (named by SOP Instance UID),
recorded and queued on ``live`` exactly like a C-STORE, then removed from the drop folder.
Files that are not DICOM, or not ultrasound, are moved aside to ``DIR/.fetalhc/rejected`` or
``DIR/.fetalhc/ignored`` (never deleted). Hidden names (``.*``) are not looked at, so a sender can
write ``.name.tmp`` and rename it when done. Polling only: no extra dependency, works on NFS/SMB.

Regular files only, and never a blocking open: each name is looked at with ``lstat`` (a symlink is not
followed) and opened ``O_NOFOLLOW | O_NONBLOCK``; a FIFO, a device, a socket or a symlink (in or out of the
folder) is moved aside to ``rejected`` unopened. A file over ``FETALHC_MAX_INSTANCE_MB`` goes there too. The
file is copied from that one open descriptor to a staging file of the spool, checked there by the one intake
rule (``worker.ingest.intake``: a bounded header read, never a whole inflate) and taken in.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from dicom_io.errors import DicomError
from dicom_io.reader import read_sop_identity
from worker.core.settings import Settings
from worker.ingest.intake import ArrivalRefused, accept_instance, is_intake_class, verify_arrival
from worker.ingest.spool import COPY_CHUNK, FILE_MODE, is_valid_uid
from worker.queue.celery_app import LIVE_QUEUE

log = logging.getLogger(__name__)

ASIDE = ".fetalhc"
STAGING = ".incoming"  # in the spool: a file copied from the drop folder, before it is taken in


class NotTaken(Exception):
    """A dropped file that is not taken: ``kind`` is the folder it is moved aside to (``rejected``, ``ignored``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class WatchCounts:
    """Totals since the watcher started."""

    queued: int = 0
    deferred: int = 0  # recorded, broker down: the sweeper queues them
    ignored: int = 0  # DICOM but not ultrasound
    rejected: int = 0  # not DICOM, or no usable SOP Instance UID
    retry: int = 0  # could not be taken now (database or spool trouble); tried again next poll
    conflicts: int = 0  # kept aside as a conflict with an instance received before (worker.ingest.intake)


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
                st = path.lstat()  # never follows a link; never opens (a FIFO would block an open)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                log.warning("moved aside something in the watch folder that is not a regular file (%s)",
                            "a symlink" if stat.S_ISLNK(st.st_mode) else "a FIFO, device or socket")
                self._aside(path, "rejected")
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
            staged = self._stage(path)
        except NotTaken as refusal:
            return self._aside(path, refusal.kind)
        except OSError as exc:
            self.counts.retry += 1
            log.warning("could not copy a dropped file now (%s); trying again on the next poll", type(exc).__name__)
            return False
        try:
            return self._take_staged(path, staged)
        finally:
            staged.unlink(missing_ok=True)

    def _take_staged(self, path: Path, staged: Path) -> bool:
        try:
            sop_class, sop_uid = read_sop_identity(staged)  # group 0008 only: bounded, a deflated file too
        except DicomError:
            return self._aside(path, "rejected")
        if not is_intake_class(sop_class):  # ultrasound, or an SR (an OB-GYN report is recorded by the worker)
            return self._aside(path, "ignored")
        if not is_valid_uid(sop_uid):
            return self._aside(path, "rejected")
        try:
            verify_arrival(self.settings, staged, sop_class, sop_uid)
            intake = accept_instance(self.settings, sop_uid, staged, "watch", LIVE_QUEUE)  # copied in chunks
        except ArrivalRefused as exc:
            log.info("a dropped file was refused (%s)", exc.reason)
            return self._aside(path, "rejected")
        except (OSError, SQLAlchemyError) as exc:
            self.counts.retry += 1
            log.warning("could not take a file now (%s); trying again on the next poll", type(exc).__name__)
            return False
        if intake.conflict is not None:
            self.counts.conflicts += 1
        elif intake.queued:
            self.counts.queued += 1
        else:
            self.counts.deferred += 1
        path.unlink(missing_ok=True)
        return True

    def _stage(self, path: Path) -> Path:
        """Copy a regular file from one non-blocking, non-following open to a staging file of the spool.

        Raises:
            NotTaken: not a regular file (swapped in since the ``lstat``), or over FETALHC_MAX_INSTANCE_MB.
            OSError: the file or the spool cannot be read or written now.
        """
        cap = int(self.settings.max_instance_mb * (1 << 20))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink, or a FIFO/socket with nobody at the other end
                raise NotTaken("rejected") from exc
            raise
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise NotTaken("rejected")
            if st.st_size > cap:
                log.warning("a dropped file of %d MiB is over FETALHC_MAX_INSTANCE_MB", st.st_size >> 20)
                raise NotTaken("rejected")
            os.set_blocking(src.fileno(), True)
            staging = self.settings.spool_dir / STAGING
            staging.mkdir(parents=True, exist_ok=True)
            out_fd, name = tempfile.mkstemp(prefix="watch.", suffix=".dcm", dir=staging)
            staged = Path(name)
            try:
                os.fchmod(out_fd, FILE_MODE)
                with os.fdopen(out_fd, "wb") as dst:
                    copied = 0
                    for chunk in iter(lambda: src.read(COPY_CHUNK), b""):
                        copied += len(chunk)
                        if copied > cap:  # it grew past the cap while being copied
                            raise NotTaken("rejected")
                        dst.write(chunk)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
        return staged

    def _aside(self, path: Path, kind: str) -> bool:
        target_dir = self.folder / ASIDE / kind
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        n = 1
        while os.path.lexists(target):
            target = target_dir / f"{path.name}.{n}"
            n += 1
        try:
            os.rename(path, target)  # the name itself (a link, a FIFO): nothing is opened
        except OSError as exc:
            if exc.errno != errno.EXDEV or not stat.S_ISREG(path.lstat().st_mode):
                raise
            shutil.move(str(path), target)  # a regular file on another filesystem: copied
        if kind == "ignored":
            self.counts.ignored += 1
        else:
            self.counts.rejected += 1
        log.info("moved a file that is %s to %s", "not ultrasound" if kind == "ignored" else "not usable DICOM",
                 target_dir)
        return True
