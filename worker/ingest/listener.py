"""The DICOM C-STORE SCP (``fetalhc listen``): ultrasound in, spooled, recorded, queued on ``live``.

Handlers are plain functions bound in a list (``handlers``); each returns a DICOM status code.
The listener answers Success only after the file is fsynced and the job row committed, so a
modality that got Success may delete its copy. Queueing to Redis may still fail after that:
the job stays ``received`` and the sweeper queues it.

Hostile or broken peers: each instance is written to a temporary file as it arrives (pynetdicom's
chunked receive), never held in memory, and an association is aborted once an instance passes
``FETALHC_MAX_INSTANCE_MB``; a data set whose own SOP Class or Instance UID is not the one its
C-STORE request announced is refused (so one instance can never overwrite another's spool file);
``FETALHC_ALLOWED_CALLERS`` rejects other calling AE titles and networks with an A-ASSOCIATE-RJ;
peers that send nothing are dropped after ``FETALHC_DICOM_TIMEOUT`` seconds. Before a caller is known
(``worker.ingest.peer_guard``): its whole A-ASSOCIATE-RQ must arrive within ``FETALHC_ASSOCIATE_TIMEOUT``
seconds and be at most 64 KB, one address holds at most ``FETALHC_MAX_ASSOCIATIONS_PER_ADDRESS``
connections, and no PDU may be longer than ``FETALHC_MAX_INSTANCE_MB`` (16 MB at most): its length is
checked from its header, before the body is read.
"""

from __future__ import annotations

import logging
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy.exc import SQLAlchemyError

from dicom_io.ob_report import OB_REPORT_SOP_CLASSES, is_ob_report
from dicom_io.reader import read_dataset
from worker.core.peers import AllowedCallers, parse_allowed_callers
from worker.core.settings import Settings
from worker.ingest.intake import INTAKE_SOP_CLASSES, ArrivalRefused, accept_instance, is_intake_class, verify_arrival
from worker.ingest.peer_guard import GuardedAE, GuardedServer, PeerLimits, start_guarded_server
from worker.ingest.spool import is_valid_uid, received_file
from worker.queue.celery_app import LIVE_QUEUE

log = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 B.2.3, PS3.7 C.4.2).
SUCCESS = 0x0000  # Success: the instance is stored (or, for ignored SOP classes, deliberately dropped)
OUT_OF_RESOURCES = 0xA700  # Refused, out of resources: disk or database unavailable; the modality retries
DATASET_MISMATCH = 0xA900  # Error, data set does not match SOP class: no usable UID, or its SOP Class is not the
#                            request's Affected SOP Class UID (0000,0002)
CANNOT_UNDERSTAND = 0xC000  # Error, cannot understand: the data set could not be encoded to a file or parsed
INSTANCE_MISMATCH = 0xC001  # Error, cannot understand (C000-CFFF): the data set's (0008,0018) SOP Instance UID is
#                             not the request's Affected SOP Instance UID (0000,1000); not stored
# A-ASSOCIATE-RJ for a peer not in FETALHC_ALLOWED_CALLERS (PS3.8 9.3.4): rejected-permanent, by the service
# user, "calling AE title not recognised" (0x03) for a title, "no reason given" (0x01) for a network.
REJECT_PERMANENT, REJECT_BY_USER, CALLING_AE_NOT_RECOGNISED, NO_REASON = 0x01, 0x01, 0x03, 0x01
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused, SOP class not supported (ACCEPT_OTHER=refuse)
# What each refusal of ``worker.ingest.intake.verify_arrival`` is answered with.
REFUSAL_STATUS = {"invalid_uid": DATASET_MISMATCH, "sop_class_mismatch": DATASET_MISMATCH,
                  "not_intake_class": DATASET_MISMATCH, "instance_mismatch": INSTANCE_MISMATCH,
                  "unreadable": CANNOT_UNDERSTAND, "too_large": CANNOT_UNDERSTAND}


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (Verification): always Success while the listener runs."""
    return SUCCESS


def handle_store(event: evt.Event, settings: Settings, source: str = "live", queue: str = LIVE_QUEUE) -> int:
    """C-STORE: spool the instance as received (compressed stays compressed), record and queue a job."""
    received = received_file(event)
    try:
        return _store(event, received, settings, source, queue)
    finally:
        if received is not None:
            received.unlink(missing_ok=True)  # pynetdicom leaves its temporary file to the handler


def _store(event: evt.Event, received: Path | None, settings: Settings, source: str, queue: str) -> int:
    sop_class = str(event.request.AffectedSOPClassUID or "").strip()
    sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
    if not is_intake_class(sop_class):
        if settings.accept_other == "refuse":
            return SOP_CLASS_NOT_SUPPORTED  # refused: only ultrasound is wanted here
        log.info("ignored an instance of SOP class %s (not ultrasound)", sop_class)
        return SUCCESS  # accepted and dropped (ACCEPT_OTHER=ignore): nothing to measure
    if not is_valid_uid(sop_uid):
        return DATASET_MISMATCH  # no valid Affected SOP Instance UID to name the instance by
    data: bytes | Path
    if received is not None:
        data = received  # preamble + file meta + data set as it arrived, already on disk
    else:
        try:
            data = event.encoded_dataset()  # preamble + file meta + data set, in the sent transfer syntax
        except Exception:  # noqa: BLE001 - whatever pydicom raises on a data set it cannot write
            log.error("could not encode a received instance")
            return CANNOT_UNDERSTAND  # the data set could not be turned into a file
    try:
        verify_arrival(settings, data, sop_class, sop_uid)  # the same checks as every other way in
    except ArrivalRefused as exc:
        log.warning("refused a received instance: %s", exc)
        return REFUSAL_STATUS.get(exc.reason, CANNOT_UNDERSTAND)
    if sop_class in OB_REPORT_SOP_CLASSES and _is_ob_report_file(data) is False:
        if settings.accept_other == "refuse":
            return SOP_CLASS_NOT_SUPPORTED  # an SR, but not an OB-GYN report: not wanted here
        log.info("ignored an SR that is not an OB-GYN report")
        return SUCCESS  # accepted and dropped (ACCEPT_OTHER=ignore)
    try:
        intake = accept_instance(settings, sop_uid, data, source, queue)
    except OSError as exc:
        log.error("spool write failed (%s); answered out-of-resources so the sender retries", type(exc).__name__)
        return OUT_OF_RESOURCES  # disk full / unwritable spool: not stored, the sender keeps it
    except SQLAlchemyError as exc:
        log.error("database unavailable (%s); answered out-of-resources so the sender retries", type(exc).__name__)
        return OUT_OF_RESOURCES  # spooled but no job recorded: not durable yet, the sender retries
    log.info("stored job %s from %s", intake.job_id, event.assoc.requestor.ae_title)
    return SUCCESS  # the file is fsynced and the job committed


def _is_ob_report_file(data: bytes | Path) -> bool | None:
    """Whether a received SR is an OB-GYN report (its header: ``dicom_io.ob_report.is_ob_report``); None when its
    header cannot be read (nested too deep, malformed): it is taken in, and the worker records why it failed."""
    try:
        if isinstance(data, bytes):
            return is_ob_report(dcmread(BytesIO(data), stop_before_pixels=True))
        return is_ob_report(read_dataset(data, stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - nested too deep (RecursionError), DicomError, whatever pydicom raises
        return None


def handle_requested(event: evt.Event, callers: AllowedCallers) -> None:
    """A-ASSOCIATE-RQ: reject a peer outside ``FETALHC_ALLOWED_CALLERS`` (logged by address, nothing else)."""
    requestor = event.assoc.requestor
    title = str(getattr(requestor.primitive, "calling_ae_title", "") or "").strip()  # set from the A-ASSOCIATE-RQ
    if callers.allows(title, str(requestor.address)):
        return
    by_title = bool(callers.ae_titles) and title not in callers.ae_titles
    log.warning("rejected an association from %s:%s (calling AE title %r): not in FETALHC_ALLOWED_CALLERS",
                requestor.address, requestor.port, title[:16])
    event.assoc.acse.send_reject(REJECT_PERMANENT, REJECT_BY_USER,
                                 CALLING_AE_NOT_RECOGNISED if by_title else NO_REASON)
    event.assoc.kill()  # as pynetdicom does after its own rejections: waits until the A-ASSOCIATE-RJ is out


def handle_data_recv(event: evt.Event, max_bytes: int) -> None:
    """Each PDU received: abort the association once the instance being received passes ``max_bytes``."""
    partial = _partial_file(event.assoc)
    if partial is None:
        return
    try:
        size = partial.tell()
    except (OSError, ValueError):
        return
    if size + len(event.data) > max_bytes:
        log.warning("aborted an association from %s: an instance passed FETALHC_MAX_INSTANCE_MB (%d MiB)",
                    event.assoc.requestor.address, max_bytes >> 20)
        _discard_partial(event.assoc)
        event.assoc.abort()


def handle_closed(event: evt.Event) -> None:
    """Connection closed or aborted: delete what was received of an unfinished instance."""
    _discard_partial(event.assoc)


def _partial_file(assoc: Any) -> Any:
    """The open temporary file of a C-STORE data set still arriving on ``assoc`` (pynetdicom internals)."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    return getattr(message, "_data_set_file", None)


def _discard_partial(assoc: Any) -> None:
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    name = getattr(partial, "name", None)
    try:
        partial.close()
    except OSError:
        pass
    message._data_set_file = _Discard()  # later fragments of this message go nowhere
    if name:
        Path(name).unlink(missing_ok=True)


class _Discard:
    """Stands in for the temporary file of an instance that was cut off: writes go nowhere."""

    @property
    def file(self) -> _Discard:
        return self

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def handlers(settings: Settings, source: str = "live", queue: str = LIVE_QUEUE) -> list[tuple[Any, ...]]:
    """The event handlers of the storage SCP, bound to ``settings``."""
    bound: list[tuple[Any, ...]] = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [settings, source, queue]),
        (evt.EVT_DATA_RECV, handle_data_recv, [int(settings.max_instance_mb * (1 << 20))]),
        (evt.EVT_CONN_CLOSE, handle_closed),
    ]
    callers = parse_allowed_callers(settings.allowed_callers)
    if not callers.open:
        bound.append((evt.EVT_REQUESTED, handle_requested, [callers]))
    return bound


def make_ae(settings: Settings, ae_title: str | None = None) -> AE:
    """An AE that accepts Verification, the ultrasound storage classes and the SR classes an OB-GYN report comes in
    (Comprehensive, Enhanced, Extensible SR), in every transfer syntax.

    With ``ACCEPT_OTHER=ignore`` every other storage class is accepted too (and dropped by the
    handler); with ``refuse`` their presentation contexts are rejected at association time.
    """
    ae = GuardedAE(ae_title=ae_title or settings.ae_title)  # the association limit counts callers known only
    ae.require_called_aet = True  # associations addressed to another AE title are rejected
    # Silent or stalled peers are dropped after DICOM_TIMEOUT (waiting for the A-ASSOCIATE-RQ, a DIMSE
    # message, or any data), and a few of them cannot hold every association slot.
    ae.maximum_associations = settings.max_associations
    ae.dimse_timeout = ae.network_timeout = settings.dicom_timeout_s
    ae.acse_timeout = min(settings.dicom_timeout_s, settings.associate_timeout_s)  # waiting for the A-ASSOCIATE-RQ
    ae.add_supported_context(Verification)
    # Scanners send JPEG (baseline, lossless), JPEG-LS, JPEG 2000, RLE: all transfer syntaxes.
    for uid in sorted(INTAKE_SOP_CLASSES):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    if settings.accept_other == "ignore":
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax not in INTAKE_SOP_CLASSES:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


def start_listener(settings: Settings, host: str | None = None, port: int | None = None,
                   ae_title: str | None = None, block: bool = False) -> GuardedServer | None:
    """Start the storage SCP on ``host:port`` (defaults from settings).

    Returns the running server (call ``.shutdown()``) when ``block`` is False; otherwise serves
    until interrupted and returns None.
    """
    from db import upgrade

    upgrade(settings.database_url)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    # Instances are written to a temporary file as they arrive, not held in memory (a process-wide setting
    # of pynetdicom; ``worker.ingest.spool.received_file`` finds the file, and the handlers take either form).
    _config.STORE_RECV_CHUNKED_DATASET = True
    address = (host or settings.listen_host, settings.listen_port if port is None else port)
    ae = make_ae(settings, ae_title)
    log.info("listening as %s on %s:%s (other SOP classes: %s)", ae.ae_title, address[0], address[1],
             settings.accept_other)
    server = start_guarded_server(ae, address, handlers(settings), PeerLimits.from_settings(settings))
    if not block:
        return server
    try:
        threading.Event().wait()  # until interrupted (SIGINT; the CLI turns SIGTERM into it)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return None
