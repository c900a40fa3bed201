"""Backfill runner: walks a source's scans, skips what is done or in flight, queues the rest, bounded.

Resumable by construction: an instance is skipped when the current model version already has a
finished row for it (``db.measured_uids``) or when it has an unfinished job (received, queued,
running), so running the same backfill again after an interruption continues where it stopped.
Bounded: at most ``max_in_flight`` backfill jobs unfinished at once, and at most ``rate`` scans
queued per second, so the ``live`` queue is never starved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from worker.core.settings import Settings
from worker.ingest.intake import ArrivalRefused, accept_instance, verify_arrival
from worker.queue.celery_app import BACKFILL_QUEUE

log = logging.getLogger(__name__)

SOURCE = "backfill"
CHUNK = 200  # candidates checked against the database per query


@dataclass(frozen=True)
class Candidate:
    """One instance a source offers: its UIDs, study date, and the source's own handle (``ref``)."""

    sop_instance_uid: str
    sop_class_uid: str | None = None
    study_date: dt.date | None = None
    ref: Any = None


class Source(Protocol):
    """Where scans come from: list candidates in a date range, fetch one to a local file."""

    label: str

    def candidates(self, since: dt.date | None, until: dt.date | None,
                   skip: Callable[[str], None]) -> Iterator[Candidate]:
        """Ultrasound instances in the range; everything passed over is reported to ``skip(reason)``."""
        ...

    def fetch(self, candidate: Candidate) -> Path:
        """A local file holding the instance (raises on failure): the source's own file when ``in_place``, else a
        staged copy that the runner removes once it is taken in."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class BackfillSummary:
    """Counts of one run. ``found``: candidate scans; the rest says what became of them."""

    found: int = 0
    queued: int = 0
    deferred: int = 0  # recorded, broker down: the sweeper queues them
    would_queue: int = 0  # --dry-run
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json``."""
        return {"found": self.found, "queued": self.queued, "deferred": self.deferred,
                "would_queue": self.would_queue, "skipped": sum(self.skipped.values()),
                "skipped_by_reason": dict(self.skipped), "failed": self.failed,
                "failed_by_reason": dict(self.failures), "dry_run": self.dry_run, "interrupted": self.interrupted}

    def line(self) -> str:
        """One human line: found, queued, skipped, failed."""
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(self.skipped.items()))
        queued = (f"would queue {self.would_queue}" if self.dry_run
                  else f"queued {self.queued}" + (f" ({self.deferred} left for the sweeper)" if self.deferred else ""))
        text = f"found {self.found}, {queued}, skipped {skipped}" + (f" ({reasons})" if reasons else "")
        text += f", failed {self.failed}" + (f" ({', '.join(f'{k} {v}' for k, v in self.failures.items())})"
                                             if self.failures else "")
        return text + (" [interrupted: run again to continue]" if self.interrupted else "")


def weights_path(settings: Settings) -> Path:
    """The weights file the workers use (FETALHC_WEIGHTS, or the shipped model), found without torch."""
    if settings.weights:
        return Path(settings.weights)
    spec = importlib.util.find_spec("models")
    assert spec is not None and spec.submodule_search_locations
    # Mirrors models.segmentation.weights.SHIPPED_WEIGHTS (importing that module would import torch).
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "hc18_unet.pt"


def current_model_version(settings: Settings) -> str | None:
    """sha256 of the weights file (the ``model_version`` on result rows); None if the file is missing."""
    path = weights_path(settings)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Throttle:
    """At most ``max_in_flight`` unfinished backfill jobs, at most ``rate`` per second."""

    def __init__(self, settings: Settings, max_in_flight: int, rate: float | None, poll_s: float,
                 on_wait: Callable[[int], None]) -> None:
        self.settings, self.max_in_flight, self.poll_s, self.on_wait = settings, max_in_flight, poll_s, on_wait
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0
        self.in_flight = self._count()

    def _count(self) -> int:
        from db import session_scope
        from db.repository import count_unfinished_jobs

        with session_scope(self.settings.database_url) as session:
            return count_unfinished_jobs(session, source=SOURCE)

    def wait(self) -> None:
        # The local estimate only grows as we queue; ask the database once it reaches the bound.
        while self.in_flight >= self.max_in_flight:
            self.in_flight = self._count()
            if self.in_flight >= self.max_in_flight:
                self.on_wait(self.in_flight)
                time.sleep(self.poll_s)
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at = time.monotonic() + self.interval

    def queued(self) -> None:
        self.in_flight += 1


def _chunks(items: Iterator[Candidate], size: int) -> Iterator[list[Candidate]]:
    chunk: list[Candidate] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_backfill(settings: Settings, source: Source, since: dt.date | None = None, until: dt.date | None = None,
                 dry_run: bool = False, rate: float | None = None, max_in_flight: int | None = None,
                 progress: bool | None = None, poll_s: float = 1.0) -> BackfillSummary:
    """Queue every scan of ``source`` in [since, until] that is not measured or in flight yet.

    Args:
        rate: at most this many scans queued per second (None: no limit).
        max_in_flight: at most this many backfill jobs received/queued/running at once
            (default ``settings.backfill_max_in_flight``); the runner waits while at the bound.
        progress: show a progress bar on stderr (None: only on a terminal).

    Database errors propagate (run again to continue); Ctrl-C stops cleanly with
    ``interrupted=True``. Example:
        >>> run_backfill(settings, FolderSource(Path("/archive")), dry_run=True).line()  # doctest: +SKIP
        'found 120, would queue 80, skipped 40 (measured 40), failed 0'
    """
    from tqdm import tqdm

    from db import measured_uids, session_scope, upgrade
    from db.repository import pending_uids

    upgrade(settings.database_url)
    summary = BackfillSummary(dry_run=dry_run)
    model_version = current_model_version(settings)
    if model_version is None:
        log.warning("weights file %s not found: cannot tell which scans are measured; only in-flight ones are "
                    "skipped", weights_path(settings))
    bar = tqdm(desc=f"backfill {source.label}", unit="scan", disable=(None if progress is None else not progress),
               dynamic_ncols=True)

    def skip(reason: str) -> None:
        summary.skipped[reason] += 1
        refresh()

    def refresh(in_flight: int | None = None) -> None:
        bar.set_postfix(queued=summary.queued + summary.would_queue, skipped=sum(summary.skipped.values()),
                        failed=summary.failed, **({"waiting_in_flight": in_flight} if in_flight is not None else {}),
                        refresh=False)
        bar.refresh()

    throttle = None if dry_run else _Throttle(settings, max_in_flight or settings.backfill_max_in_flight, rate,
                                              poll_s, lambda n: refresh(n))
    seen: set[str] = set()
    try:
        for chunk in _chunks(source.candidates(since, until, skip), CHUNK):
            uids = [c.sop_instance_uid for c in chunk]
            with session_scope(settings.database_url) as session:
                done = measured_uids(session, model_version, uids) if model_version else set()
                pending = pending_uids(session, uids)
            for cand in chunk:
                summary.found += 1
                bar.update(1)
                uid = cand.sop_instance_uid
                if uid in seen:
                    skip("duplicate")
                    continue
                seen.add(uid)
                if uid in done:
                    skip("measured")
                    continue
                if uid in pending:
                    skip("in_flight")
                    continue
                if dry_run:
                    summary.would_queue += 1
                    refresh()
                    continue
                assert throttle is not None
                throttle.wait()
                try:
                    path = source.fetch(cand)
                except Exception as exc:  # noqa: BLE001 - one scan's retrieval failure is counted, not fatal
                    summary.failed += 1
                    summary.failures[getattr(exc, "reason", type(exc).__name__)] += 1
                    # Type and reason only: messages may hold paths or names that identify a patient.
                    log.warning("could not fetch scan %d of this run (%s, %s)", summary.found, type(exc).__name__,
                                getattr(exc, "reason", "-"))
                    refresh()
                    continue
                in_place = bool(getattr(source, "in_place", False))
                try:  # the one intake rule of every path in (worker.ingest.intake)
                    verify_arrival(settings, path, cand.sop_class_uid if in_place else None, uid)
                    intake = accept_instance(settings, uid, path, SOURCE, BACKFILL_QUEUE, in_place=in_place)
                except ArrivalRefused as exc:
                    summary.failed += 1
                    summary.failures[exc.reason] += 1
                    log.warning("refused scan %d of this run (%s)", summary.found, exc.reason)
                    refresh()
                    continue
                finally:
                    if not in_place:
                        path.unlink(missing_ok=True)  # staged by fetch: taken in (copied) or refused
                if intake.conflict is not None:
                    summary.failed += 1
                    summary.failures["conflict"] += 1
                    refresh()
                    continue
                throttle.queued()
                if intake.queued:
                    summary.queued += 1
                else:
                    summary.deferred += 1
                refresh()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        source.close()
    return summary
