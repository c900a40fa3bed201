"""DICOM SR output: write each stored measurement's SR file and C-STORE it to the PACS.

Off unless ``FETALHC_SR_DIR`` or ``FETALHC_SR_DESTINATION`` is set. Nothing here may lose or fail
a measurement: the row is stored before, and every error ends as a log line (no patient
identifiers: job ids, SR counts and DIMSE statuses only), a metric and, for a send that failed, the
SR file kept in the outbox for ``fetalhc sr send``.

Each row owes its SR in the database (``measurements.sr_status``): ``pending`` is stored with the
row (``mark_owed``), ``done`` once the SR is written and, with a destination, stored there
(``export_and_record``). A worker lost between the commit and the export leaves ``pending`` rows;
the sweep exports them (``export_pending``), a bounded batch at a time. A send that failed stays
``pending`` (tried again by a later sweep); an SR that cannot be built is ``failed`` for good.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import (
    REPORTABLE_STATUSES,
    SrStatus,
    pending_reports,
    session_scope,
    set_sr_status,
)
from db.rows import MeasurementRow
from db.tables import MEASUREMENT_COLUMNS
from dicom_io.reader import read_dataset
from dicom_io.sr import HeadMeasurement, SrError, build_sr, write_sr
from models.errors import FetalHCError
from worker.core import metrics
from worker.core.peers import parse_dimse_url
from worker.core.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # TCP connect, then association request/accept (ACSE)
DIMSE_TIMEOUT_S = 30.0  # the C-STORE response
# C-STORE statuses (PS3.4 B.2.3): 0x0000 success; 0xB000, 0xB007, 0xB006 warnings (stored, with a coercion or
# elements discarded); anything else (0xA7xx out of resources, 0xA9xx data set does not match, 0xCxxx cannot
# understand) is a failure and the file stays for a retry.
STORED = (0x0000, 0xB000, 0xB006, 0xB007)
SWEEP_BATCH = 50  # pending SRs one sweep exports at most (a PACS that is down costs one failed association)

RowKey = tuple[str, int, str]  # (SOP Instance UID, frame, model version): a measurement row's key


@dataclass
class SendSummary:
    """What one send attempt did: files stored, the reason for each failure (paths kept), and per row key
    (``export_reports``) whose SR is out, is to be tried again, or cannot be built."""

    sent: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    done: list[RowKey] = field(default_factory=list)  # rows whose SR is written (and stored, with a destination)
    retry: list[RowKey] = field(default_factory=list)  # not sent (or the outbox not writable): try again later
    unbuilt: list[RowKey] = field(default_factory=list)  # no SR could be built from the row and its source


def _key(row: dict[str, Any]) -> RowKey:
    return (str(row.get("sop_instance_uid") or ""), int(row.get("frame") or 1), str(row.get("model_version") or ""))


def outbox(settings: Settings) -> Path:
    """Where SR files are written: ``FETALHC_SR_DIR``, else ``<SPOOL_DIR>/sr`` (unsent files only)."""
    return settings.sr_dir if settings.sr_dir is not None else settings.spool_dir / "sr"


def send_files(paths: Sequence[Path], destination: str, calling_ae: str) -> SendSummary:
    """C-STORE ``paths`` (SR files) to ``dimse://AET@host:port`` over one association.

    Never raises for a peer's trouble: each file is either in ``sent`` or in ``failed`` with a reason.
    """
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import ComprehensiveSRStorage, EnhancedSRStorage  # type: ignore[attr-defined]

    summary = SendSummary()
    if not paths:
        return summary
    called_ae, host, port = parse_dimse_url(destination)
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = ae.acse_timeout = CONNECT_TIMEOUT_S
    ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT_S
    for sop_class in (ComprehensiveSRStorage, EnhancedSRStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(host, port, ae_title=called_ae)
    except OSError as exc:
        reason = f"cannot connect ({type(exc).__name__})"
        summary.failed.update({p: reason for p in paths})
        return summary
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "no association (peer down, or it timed out)"
        summary.failed.update({p: reason for p in paths})
        return summary
    try:
        for i, path in enumerate(paths):
            try:
                status = assoc.send_c_store(dcmread(path))
            except (OSError, ValueError, RuntimeError) as exc:  # unreadable file, no accepted context, lost link
                summary.failed[path] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in STORED:
                summary.sent.append(path)
            else:
                summary.failed[path] = ("no C-STORE response (timed out or aborted)" if code == -1
                                        else f"C-STORE status 0x{code:04X}")
            if not assoc.is_established:
                for rest in paths[i + 1:]:
                    summary.failed[rest] = "association lost"
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return summary


def _build(settings: Settings, row: dict[str, Any]) -> Path:
    """Write the SR of one stored row into the outbox; returns its path. Raises SrError, FetalHCError."""
    source = read_dataset(Path(row["path"]), stop_before_pixels=True)
    sr = build_sr(source, HeadMeasurement.from_row(row))
    return write_sr(outbox(settings), sr)


def export_reports(settings: Settings, rows: Iterable[dict[str, Any]]) -> SendSummary:
    """Write (and send, when a destination is set) the SR of every measured or needs_review row; never raises.

    With ``SR_DIR`` unset, files sent are removed (the outbox then holds only what is left to send).
    """
    summary = SendSummary()
    if settings.sr_dir is None and settings.sr_destination is None:
        return summary
    written: list[tuple[Path, Any]] = []
    keys: dict[Path, RowKey] = {}
    unbuilt: list[RowKey] = []
    retry: list[RowKey] = []
    for row in rows:
        if row.get("status") not in REPORTABLE_STATUSES or not row.get("path"):
            continue
        try:
            path = _build(settings, row)
            written.append((path, row.get("job_id")))
            keys[path] = _key(row)
            metrics.record_sr("written")
        except (SrError, FetalHCError) as exc:
            log.warning("SR for job %s not written: %s", row.get("job_id"), exc if isinstance(exc, SrError)
                        else getattr(exc, "reason", type(exc).__name__))
            metrics.record_sr("build_failed")
            unbuilt.append(_key(row))
        except OSError as exc:  # the outbox (disk full, permissions): the operator's to fix, then a sweep's
            log.warning("SR for job %s not written to the outbox: %s", row.get("job_id"), type(exc).__name__)
            metrics.record_sr("build_failed")
            retry.append(_key(row))
        except Exception as exc:  # noqa: BLE001 - a report must never fail the measurement
            log.error("SR for job %s not written: unexpected %s", row.get("job_id"), type(exc).__name__)
            metrics.record_sr("build_failed")
            unbuilt.append(_key(row))
    summary.unbuilt, summary.retry = unbuilt, retry
    if settings.sr_destination is None or not written:
        summary.done = [keys[p] for p, _ in written]
        return summary
    try:
        summary = send_files([p for p, _ in written], settings.sr_destination, settings.ae_title)
    except Exception as exc:  # noqa: BLE001
        summary = SendSummary(failed={p: f"unexpected {type(exc).__name__}" for p, _ in written})
    summary.unbuilt = unbuilt
    summary.done = [keys[p] for p in summary.sent]
    summary.retry = retry + [keys[p] for p in summary.failed]
    jobs = dict(written)
    for path in summary.sent:
        metrics.record_sr("sent")
        if settings.sr_dir is None:
            path.unlink(missing_ok=True)
    for path, reason in summary.failed.items():
        metrics.record_sr("send_failed")
        log.warning("SR for job %s not sent to %s: %s; kept in %s for `fetalhc sr send`", jobs.get(path),
                    settings.sr_destination, reason, path.parent)
    return summary


def mark_owed(rows: Iterable[MeasurementRow]) -> list[MeasurementRow]:
    """The rows with their ``sr_status`` set, before they are stored: ``pending`` for a measured or needs_review
    row of a file.

    Any other row owes no SR (None: a not_head or failed row replacing a measurement owes none either).
    """
    owed = []
    for row in rows:
        reportable = row.get("status") in REPORTABLE_STATUSES and row.get("path") and row.get("sop_instance_uid")
        owed.append(row.replace(sr_status=SrStatus.PENDING.value if reportable else None))
    return owed


def record_outcome(database_url: str, summary: SendSummary) -> None:
    """Store what an export did on the rows still ``pending``: done, failed (not buildable), or tried (retry).

    Never raises: a database that is down leaves the rows ``pending``, and a later sweep exports them again
    (the same SR UIDs, so a destination that already has them only sees a repeat).
    """
    try:
        with session_scope(database_url) as session:
            set_sr_status(session, summary.done, SrStatus.DONE)
            set_sr_status(session, summary.unbuilt, SrStatus.FAILED)
            set_sr_status(session, summary.retry, SrStatus.PENDING)  # tried now: after the others next time
    except Exception as exc:  # noqa: BLE001 - the SRs are out; only their bookkeeping waits
        log.warning("SR outcome of %d rows not recorded: %s", len(summary.done) + len(summary.unbuilt),
                    type(exc).__name__)


def export_and_record(settings: Settings, rows: Sequence[dict[str, Any]]) -> SendSummary:
    """``export_reports`` then ``record_outcome``: the SRs of stored rows, and their ``sr_status``; never raises."""
    summary = export_reports(settings, rows)
    record_outcome(settings.database_url, summary)
    return summary


def export_pending(settings: Settings, older_than: dt.timedelta, limit: int = SWEEP_BATCH) -> SendSummary:
    """The sweep's part: export up to ``limit`` SRs still ``pending`` after ``older_than``; never raises.

    Rows younger than ``older_than`` are left to the worker that stored them (it may be exporting them
    now). Off (an empty summary) unless ``FETALHC_SR_DIR`` or ``FETALHC_SR_DESTINATION`` is set.
    """
    if settings.sr_dir is None and settings.sr_destination is None:
        return SendSummary()
    try:
        with session_scope(settings.database_url) as session:
            rows = [{c: getattr(m, c) for c in MEASUREMENT_COLUMNS}
                    for m in pending_reports(session, older_than, limit)]
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.warning("pending SRs not read: %s", type(exc).__name__)
        return SendSummary()
    if not rows:
        return SendSummary()
    summary = export_and_record(settings, rows)
    log.info("sweep: %d SRs owed exported (%d left for a later sweep, %d cannot be built)", len(summary.done),
             len(summary.retry), len(summary.unbuilt),
             extra={"sr_done": len(summary.done), "sr_retry": len(summary.retry), "sr_unbuilt": len(summary.unbuilt)})
    return summary


def send_folder(folder: Path, destination: str, calling_ae: str, remove_sent: bool = False) -> SendSummary:
    """Send every ``*.dcm`` SR in ``folder`` again (``fetalhc sr send``); optionally remove those sent."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    summary = send_files(sorted(folder.glob("*.dcm")), destination, calling_ae)
    for path in summary.sent:
        metrics.record_sr("sent")
        if remove_sent:
            path.unlink(missing_ok=True)
    for _ in summary.failed:
        metrics.record_sr("send_failed")
    return summary
