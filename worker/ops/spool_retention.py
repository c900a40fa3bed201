"""Spool retention: delete the spool files of jobs finished long ago, and old files no job refers to.

Off by default (``FETALHC_SPOOL_RETENTION_DAYS`` = 0 keeps every scan): deleting patient data is
opted into. What ``prune_spool`` deletes, walking the spool folder (symlinks never followed):

- a file of jobs that are all finished (done, needs_review, not_head, failed) more than ``older_than`` ago,
  the file itself unchanged for as long (an instance sent again is written anew, before its new
  job row exists: its fresh file is kept). The jobs keep their status and reason; their ``detail``
  gains ``spool file pruned YYYY-MM-DD``. A pruned job run again fails as ``missing_file``.
- a file no job refers to (a crash between the spool write and the job row; the sender retried
  under a new write), once older than ``older_than`` + ``ORPHAN_MARGIN``; likewise a temporary
  file (``.<name>.*.tmp`` of ``write_atomic``, ``.<name>.*.part`` of an API upload) left by a
  crash. A temporary file being written is fresh, and stays.
- empty sub-folders (not the spool itself, nor ``api/``, which the API creates on demand).

Never deleted: a file of a job received, queued or running (however old), or finished recently;
a file of another job with the same SOP Instance UID still in flight; anything outside the spool
(a ``watch``/``backfill`` job's path elsewhere is never looked at: only what the walk finds in
the spool is a candidate); symlinks (the link and its target are left alone); other hidden files;
the DICOM SR outbox (``<spool>/sr`` or ``FETALHC_SR_DIR`` when it is inside the spool: SRs that
wait to be sent).

Database work is batched: one query per ``BATCH`` old files, one update per batch of deletions.
Logs carry counts only, never paths (paths can hold patient names).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update

from db import FINISHED_JOB_STATUSES, Job, session_scope
from worker.core import metrics
from worker.core.settings import Settings
from worker.ingest.spool import SUFFIX, is_valid_uid
from worker.measure.sr_export import outbox

log = logging.getLogger(__name__)

PRUNED_NOTE = "spool file pruned"
# Extra age before a file no job refers to is deleted: a file whose job row is written under
# another spelling of its path (a spool folder configured differently) is never taken for one.
ORPHAN_MARGIN = dt.timedelta(days=1)
BATCH = 500
KEEP_FOLDERS = ("api",)  # top-level folders others create on demand: removing them races their writers
TEMP_SUFFIXES = (".tmp", ".part")


@dataclass
class PruneSummary:
    """What one prune did (or, with ``dry_run``, would do). Sizes in bytes."""

    dry_run: bool = False
    files: int = 0  # spool files of finished jobs deleted
    bytes: int = 0
    orphans: int = 0  # files no job refers to, and temporary files left by a crash, deleted
    orphan_bytes: int = 0
    jobs_marked: int = 0  # jobs whose detail now says their file was pruned
    kept_in_use: int = 0  # old files kept: a job on them is unfinished or finished recently
    skipped: int = 0  # symlinks and other non-regular entries, never touched
    folders: int = 0  # empty sub-folders removed
    errors: int = 0  # files or folders that could not be removed (permissions, a concurrent write)

    @property
    def freed_bytes(self) -> int:
        """Bytes freed in all (job files and orphans)."""
        return self.bytes + self.orphan_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "freed_bytes": self.freed_bytes}


@dataclass
class _Candidate:
    path: Path
    forms: tuple[str, ...]  # spellings a job row may hold for this path
    uid: str | None  # SOP Instance UID when the name is ``<uid>.dcm``
    size: int
    ino: int
    mtime_ns: int


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive UTC
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def prune_spool(settings: Settings, older_than: dt.timedelta, dry_run: bool = False,
                now: dt.datetime | None = None) -> PruneSummary:
    """Delete the spool files of jobs finished more than ``older_than`` ago, and old orphans (module docstring).

    Example:
        >>> prune_spool(get_settings(), dt.timedelta(days=30), dry_run=True).as_dict()  # doctest: +SKIP

    Raises:
        ValueError: ``older_than`` is negative.
        sqlalchemy.exc.SQLAlchemyError: the jobs table cannot be read (nothing was deleted since the
            last batch that could be read).
    """
    if older_than < dt.timedelta(0):
        raise ValueError(f"older_than={older_than} cannot be negative")
    now = now or dt.datetime.now(dt.timezone.utc)
    summary = PruneSummary(dry_run=dry_run)
    spool = Path(settings.spool_dir)
    if not spool.is_dir():
        return summary
    pruner = _Pruner(settings, spool, now, older_than, summary)
    batch: list[_Candidate] = []
    for cand in pruner.walk():
        batch.append(cand)
        if len(batch) >= BATCH:
            pruner.decide(batch)
            batch = []
    if batch:
        pruner.decide(batch)
    pruner.remove_empty_folders()
    if not dry_run:
        metrics.record_spool_prune("job", summary.files, summary.bytes)
        metrics.record_spool_prune("orphan", summary.orphans, summary.orphan_bytes)
    if summary.files or summary.orphans or summary.errors:
        log.info("spool prune%s: %d files of finished jobs and %d orphans, %d bytes; %d jobs marked, %d old files "
                 "still in use, %d folders, %d errors", " (dry run)" if dry_run else "", summary.files,
                 summary.orphans, summary.freed_bytes, summary.jobs_marked, summary.kept_in_use, summary.folders,
                 summary.errors, extra={"pruned_files": summary.files, "pruned_orphans": summary.orphans,
                                        "freed_bytes": summary.freed_bytes})
    return summary


class _Pruner:
    """One pass over the spool: the walk, the batched decisions, the deletions and the folder clean-up."""

    def __init__(self, settings: Settings, spool: Path, now: dt.datetime, older_than: dt.timedelta,
                 summary: PruneSummary) -> None:
        self.settings = settings
        self.spool = spool
        self.real = spool.resolve()
        self.cutoff = now - older_than
        self.cutoff_ns = int(self.cutoff.timestamp() * 1e9)
        self.orphan_cutoff_ns = int((self.cutoff - ORPHAN_MARGIN).timestamp() * 1e9)
        self.note = f"{PRUNED_NOTE} {now.astimezone(dt.timezone.utc).date().isoformat()}"
        self.summary = summary
        self.outbox = os.path.realpath(outbox(settings))  # never entered
        self.keep = {str(self.real)} | {str(self.real / name) for name in KEEP_FOLDERS}  # never removed
        self.remaining: dict[str, int] = {}  # folder -> entries that stay in it
        self.folders: list[str] = []  # walk order: parents before children

    # -- the walk --------------------------------------------------------------------------------------

    def walk(self) -> Iterator[_Candidate]:
        """The regular, visible files unchanged since the cutoff; temporary leftovers are handled here."""
        root = str(self.real)
        for folder, dirs, files in os.walk(root, followlinks=False):
            if folder == self.outbox:  # SRs waiting to be sent
                dirs[:] = []
                continue
            self.folders.append(folder)
            self.remaining[folder] = len(dirs) + len(files)
            for name in list(dirs):
                if os.path.islink(os.path.join(folder, name)):  # listed, never entered: left alone
                    self.summary.skipped += 1
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # gone meanwhile (a write's temp file renamed)
                    self._gone(folder)
                    continue
                if not stat.S_ISREG(st.st_mode):  # a symlink (its target is not ours), a socket, ...
                    self.summary.skipped += 1
                    continue
                if name.startswith("."):
                    if name.endswith(TEMP_SUFFIXES) and st.st_mtime_ns < self.orphan_cutoff_ns:
                        self._delete(Path(path), st.st_size, st.st_ino, st.st_mtime_ns, orphan=True)
                    continue  # a write in progress, or not ours
                if not name.lower().endswith(SUFFIX):
                    continue  # spool files are ``*.dcm``; anything else was put here by someone else
                if st.st_mtime_ns >= self.cutoff_ns:
                    continue  # written recently (a new arrival, or the same instance sent again)
                yield self._candidate(Path(path), name, st)

    def _candidate(self, path: Path, name: str, st: os.stat_result) -> _Candidate:
        rel = path.relative_to(self.real)
        forms = {str(path), str(self.spool / rel), os.path.abspath(self.spool / rel)}
        uid = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
        return _Candidate(path, tuple(sorted(forms)), uid if uid and is_valid_uid(uid) else None,
                          st.st_size, st.st_ino, st.st_mtime_ns)

    # -- the decisions ---------------------------------------------------------------------------------

    def decide(self, batch: list[_Candidate]) -> None:
        """Delete what may go in one batch of old files (one query, one update)."""
        forms = sorted({f for c in batch for f in c.forms})
        uids = sorted({c.uid for c in batch if c.uid})
        clause = Job.path.in_(forms) if not uids else or_(Job.path.in_(forms), Job.sop_instance_uid.in_(uids))
        with session_scope(self.settings.database_url) as session:
            rows = session.execute(select(Job.id, Job.path, Job.sop_instance_uid, Job.status, Job.finished_at,
                                          Job.updated_at).where(clause)).all()
        by_path: dict[str, list[Any]] = {}
        by_uid: dict[str, list[Any]] = {}
        for row in rows:
            by_path.setdefault(row.path, []).append(row)
            if row.sop_instance_uid:
                by_uid.setdefault(row.sop_instance_uid, []).append(row)
        to_mark: list[int] = []
        for cand in batch:
            refs = {row.id: row for form in cand.forms for row in by_path.get(form, ())}
            related = refs | {row.id: row for row in by_uid.get(cand.uid or "", ())}
            if any(self._in_use(row) for row in related.values()):
                self.summary.kept_in_use += 1
                continue
            if refs:
                if self._delete(cand.path, cand.size, cand.ino, cand.mtime_ns, orphan=False):
                    to_mark.extend(refs)
            elif cand.mtime_ns < self.orphan_cutoff_ns:
                self._delete(cand.path, cand.size, cand.ino, cand.mtime_ns, orphan=True)
        if to_mark and not self.summary.dry_run:
            self.summary.jobs_marked += self._mark(to_mark)
        elif to_mark:
            self.summary.jobs_marked += len(set(to_mark))

    def _in_use(self, row: Any) -> bool:
        """A job still needs its file: unfinished, or finished after the cutoff."""
        if row.status not in FINISHED_JOB_STATUSES:
            return True
        finished = _aware(row.finished_at) or _aware(row.updated_at)
        return finished is None or finished >= self.cutoff

    def _mark(self, job_ids: Iterable[int]) -> int:
        """Append the pruned note (UTC date) to each job's detail (status and reason kept); returns jobs updated."""
        ids = sorted(set(job_ids))
        stmt = (update(Job)
                .where(Job.id.in_(ids), Job.status.in_(FINISHED_JOB_STATUSES),
                       or_(Job.detail.is_(None), ~Job.detail.contains(PRUNED_NOTE, autoescape=True)))
                .values(detail=func.coalesce(Job.detail + "; ", "") + self.note)
                .execution_options(synchronize_session=False))
        with session_scope(self.settings.database_url) as session:
            return int(session.execute(stmt).rowcount or 0)

    # -- deleting --------------------------------------------------------------------------------------

    def _delete(self, path: Path, size: int, ino: int, mtime_ns: int, orphan: bool) -> bool:
        """Unlink ``path`` if it is still the file that was judged (not replaced meanwhile); True when gone."""
        folder = str(path.parent)
        if not os.path.realpath(path).startswith(str(self.real) + os.sep):
            self.summary.skipped += 1  # cannot happen with the walk above; never delete outside the spool
            return False
        if not self.summary.dry_run:
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_ino != ino or st.st_mtime_ns != mtime_ns:
                    return False  # written again since the walk: a new arrival
                os.unlink(path)
            except FileNotFoundError:
                self._gone(folder)
                return False
            except OSError as exc:
                self.summary.errors += 1
                log.warning("spool prune: a file could not be deleted (%s)", type(exc).__name__)
                return False
        self._gone(folder)
        if orphan:
            self.summary.orphans += 1
            self.summary.orphan_bytes += size
        else:
            self.summary.files += 1
            self.summary.bytes += size
        return True

    def _gone(self, folder: str) -> None:
        self.remaining[folder] = self.remaining.get(folder, 1) - 1

    def remove_empty_folders(self) -> None:
        """Remove the sub-folders left empty (deepest first); the spool and ``KEEP_FOLDERS`` stay."""
        for folder in reversed(self.folders):
            if folder in self.keep or self.remaining.get(folder, 1) > 0:
                continue
            if not self.summary.dry_run:
                try:
                    os.rmdir(folder)
                except FileNotFoundError:
                    pass
                except OSError:  # not empty after all (a file arrived), or not ours to remove
                    continue
            self.summary.folders += 1
            self._gone(os.path.dirname(folder))
