"""The DICOM C-STORE SCP (``fetalhc listen``): ultrasound in, spooled, recorded, queued on ``live``.

Handlers are plain functions bound in a list (``handlers``); each returns a DICOM status code.
The listener answers Success only after the file is fsynced and the job row committed, so a
modality that got Success may delete its copy. Queueing to Redis may still fail after that:
the job stays ``received`` and the sweeper queues it.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from dicom_io.reader import ULTRASOUND_SOP_CLASSES
from worker.celery_app import LIVE_QUEUE
from worker.ingest.intake import accept_instance, is_ultrasound
from worker.ingest.spool import is_valid_uid
from worker.settings import Settings

log = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 B.2.3, PS3.7 C.4.2).
SUCCESS = 0x0000  # Success: the instance is stored (or, for ignored SOP classes, deliberately dropped)
OUT_OF_RESOURCES = 0xA700  # Refused, out of resources: disk or database unavailable; the modality retries
DATASET_MISMATCH = 0xA900  # Error, data set does not match SOP class: no usable SOP Instance UID
CANNOT_UNDERSTAND = 0xC000  # Error, cannot understand: the data set could not be encoded to a file
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused, SOP class not supported (ACCEPT_OTHER=refuse)


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (Verification): always Success while the listener runs."""
    return SUCCESS


def handle_store(event: evt.Event, settings: Settings, source: str = "live", queue: str = LIVE_QUEUE) -> int:
    """C-STORE: spool the instance as received (compressed stays compressed), record and queue a job."""
    sop_class = str(event.request.AffectedSOPClassUID or "")
    sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
    if not is_ultrasound(sop_class):
        if settings.accept_other == "refuse":
            return SOP_CLASS_NOT_SUPPORTED  # refused: only ultrasound is wanted here
        log.info("ignored an instance of SOP class %s (not ultrasound)", sop_class)
        return SUCCESS  # accepted and dropped (ACCEPT_OTHER=ignore): nothing to measure
    if not is_valid_uid(sop_uid):
        return DATASET_MISMATCH  # no valid Affected SOP Instance UID to name the instance by
    try:
        data = event.encoded_dataset()  # preamble + file meta + data set, in the sent transfer syntax
    except Exception:  # noqa: BLE001 - whatever pydicom raises on a data set it cannot write
        log.exception("could not encode a received instance")
        return CANNOT_UNDERSTAND  # the data set could not be turned into a file
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


def handlers(settings: Settings, source: str = "live", queue: str = LIVE_QUEUE) -> list[tuple[Any, ...]]:
    """The event handlers of the storage SCP, bound to ``settings``."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [settings, source, queue]),
    ]


def make_ae(settings: Settings, ae_title: str | None = None) -> AE:
    """An AE that accepts Verification and the ultrasound storage classes in every transfer syntax.

    With ``ACCEPT_OTHER=ignore`` every other storage class is accepted too (and dropped by the
    handler); with ``refuse`` their presentation contexts are rejected at association time.
    """
    ae = AE(ae_title=ae_title or settings.ae_title)
    ae.require_called_aet = True  # associations addressed to another AE title are rejected
    ae.add_supported_context(Verification)
    # Scanners send JPEG (baseline, lossless), JPEG-LS, JPEG 2000, RLE: all transfer syntaxes.
    for uid in sorted(ULTRASOUND_SOP_CLASSES):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    if settings.accept_other == "ignore":
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax not in ULTRASOUND_SOP_CLASSES:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


def start_listener(settings: Settings, host: str | None = None, port: int | None = None,
                   ae_title: str | None = None, block: bool = False) -> ThreadedAssociationServer | None:
    """Start the storage SCP on ``host:port`` (defaults from settings).

    Returns the running server (call ``.shutdown()``) when ``block`` is False; otherwise serves
    until interrupted and returns None.
    """
    from db import upgrade

    upgrade(settings.database_url)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    address = (host or settings.listen_host, settings.listen_port if port is None else port)
    ae = make_ae(settings, ae_title)
    log.info("listening as %s on %s:%s (other SOP classes: %s)", ae.ae_title, address[0], address[1],
             settings.accept_other)
    return ae.start_server(address, block=block, evt_handlers=handlers(settings))
