"""Backfill source: a PACS over DIMSE. C-FIND (Study Root) for US studies, then C-GET each instance.

Listing walks the Study Root hierarchy: STUDY level with ModalitiesInStudy=US and the StudyDate
range, SERIES level with Modality=US, IMAGE level for the SOP Instance and Class UIDs. Retrieval
is per instance, so the runner's skip, rate and in-flight bound act on single scans.

C-GET (default): the instances come back on the same association we opened (we take the storage
SCP role for the ultrasound classes), so no listener has to run and the PACS needs no route back
to us. C-MOVE (``retrieve="move"``): for PACS without C-GET; a temporary storage SCP is started
with its own AE title and port (``move_ae``/``move_port``), which the PACS must know as a
destination. Either way instances land in the spool and go to the ``backfill`` queue, never to
the live listener's ``live`` queue.

What comes back is checked as the listener checks a C-STORE (``worker.ingest.intake.verify_arrival``): only an
instance asked for, whose data set is the class and instance it was sent as, at most ``FETALHC_MAX_INSTANCE_MB``
(written to a file as it arrives, the association aborted past that); it is staged, and the runner takes it in
by the one intake rule. The C-MOVE destination listens on ``FETALHC_LISTEN_HOST``, honours
``FETALHC_ALLOWED_CALLERS`` and has the listener's bounds on peers (``worker.ingest.peer_guard``).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from models.errors import RetrieveError
from worker.backfill.folder import in_range, parse_da
from worker.backfill.runner import Candidate
from worker.core.peers import parse_allowed_callers
from worker.core.settings import Settings, get_settings
from worker.ingest.intake import INTAKE_SOP_CLASSES, ArrivalRefused, is_intake_class, verify_arrival
from worker.ingest.listener import REFUSAL_STATUS, SOP_CLASS_NOT_SUPPORTED, handle_closed, handle_data_recv, \
    handle_requested
from worker.ingest.peer_guard import GuardedAE, GuardedServer, PeerLimits, start_guarded_server
from worker.ingest.spool import received_file, write_atomic

log = logging.getLogger(__name__)

# Proposed one per presentation context, so the PACS can send each file as it is stored.
STORAGE_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
    JPEGLossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless,
    DeflatedExplicitVRLittleEndian,
)
PENDING = (0xFF00, 0xFF01)  # C-FIND/C-GET/C-MOVE: pending, more to come
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
NOT_ASKED_FOR = 0xC002  # Error, cannot understand (C000-CFFF): an instance no C-GET/C-MOVE of ours asked for
STAGING = ".incoming"  # where retrieved instances wait in the spool for the runner (hidden: not a spooled scan)


def dicom_range(since: dt.date | None, until: dt.date | None) -> str:
    """A DA range matching key (PS3.4 C.2.2.2.5): ``YYYYMMDD-YYYYMMDD``, open ends allowed, '' for all."""
    if since is None and until is None:
        return ""
    return f"{since.strftime('%Y%m%d') if since else ''}-{until.strftime('%Y%m%d') if until else ''}"


def staging_path(spool_dir: Path, uid: str) -> Path:
    """A fresh file name in the spool's staging folder for an instance retrieved and not yet taken in."""
    return Path(spool_dir) / STAGING / f"{uid}.{secrets.token_hex(6)}.dcm"


class _Arrivals:
    """Storage handler for retrieved instances: the listener's checks, only what was asked for, staged by UID."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.expected: set[str] = set()
        self.paths: dict[str, Path] = {}
        self.lock = threading.Lock()

    def expect(self, uid: str) -> None:
        with self.lock:
            self.expected.add(uid)

    def handle_store(self, event: evt.Event) -> int:
        received = received_file(event)  # set when pynetdicom writes arrivals to a file (chunked receive)
        try:
            return self._store(event, received)
        finally:
            if received is not None:
                received.unlink(missing_ok=True)

    def _store(self, event: evt.Event, received: Path | None) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "").strip()
        sop_class = str(event.request.AffectedSOPClassUID or "").strip()
        with self.lock:
            asked = uid in self.expected
        if not asked:
            log.warning("refused an instance from %s that no retrieve of this run asked for",
                        event.assoc.requestor.address)
            return NOT_ASKED_FOR
        if not is_intake_class(sop_class):
            return SOP_CLASS_NOT_SUPPORTED
        data = received if received is not None else event.encoded_dataset()
        try:
            verify_arrival(self.settings, data, sop_class, uid)
        except ArrivalRefused as exc:
            log.warning("refused a retrieved instance: %s", exc)
            return REFUSAL_STATUS.get(exc.reason, 0xC000)
        try:
            path = write_atomic(staging_path(self.settings.spool_dir, uid), data)
        except OSError:
            return OUT_OF_RESOURCES  # Refused: out of resources (spool not writable)
        with self.lock:
            self.expected.discard(uid)
            self.paths[uid] = path
        return SUCCESS  # staged; the runner takes it in

    def take(self, uid: str) -> Path | None:
        with self.lock:
            self.expected.discard(uid)
            return self.paths.pop(uid, None)


class DimseSource:
    """A PACS reached over DIMSE as ``calling_ae`` -> ``called_ae``@``host``:``port``."""

    def __init__(self, host: str, port: int, called_ae: str, calling_ae: str, spool_dir: Path | None = None,
                 retrieve: str = "get", move_ae: str | None = None, move_port: int | None = None,
                 move_host: str | None = None, timeout_s: float = 30.0, settings: Settings | None = None) -> None:
        if retrieve not in ("get", "move"):
            raise ValueError(f"retrieve={retrieve!r}; choose one of: get, move")
        if retrieve == "move" and (not move_ae or not move_port):
            raise ValueError("C-MOVE needs the AE title and port of our temporary storage SCP (move_ae, move_port) "
                             "registered as a destination on the PACS")
        settings = settings or get_settings()
        if spool_dir is not None and Path(spool_dir) != settings.spool_dir:
            settings = settings.replace(spool_dir=Path(spool_dir))
        self.settings = settings
        self.host, self.port, self.called_ae, self.calling_ae = host, port, called_ae, calling_ae
        self.retrieve, self.move_ae, self.move_port = retrieve, move_ae, move_port
        self.move_host = move_host or settings.listen_host  # where the listener listens, not every interface
        self.timeout_s = timeout_s
        self.label = f"{called_ae}@{host}:{port}"
        self.arrivals = _Arrivals(settings)
        self.in_place = False  # fetch stages a file: the runner takes it in and removes it
        self._retrieve_assoc: Association | None = None
        self._scp: GuardedServer | None = None
        # Retrieved instances are written to a file as they arrive, never held whole (process-wide, as the listener).
        _config.STORE_RECV_CHUNKED_DATASET = True

    # -- listing -------------------------------------------------------------------------------------

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        return ae

    def _associate(self, ae: AE, **kwargs: Any) -> Association:
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, **kwargs)
        if not assoc.is_established:
            raise RetrieveError(f"association with {self.label} was not accepted (check the AE titles, and that "
                                f"the PACS knows {self.calling_ae})", reason="association_refused")
        return assoc

    def _find(self, assoc: Association, query: Dataset) -> list[Dataset]:
        found = []
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = int(getattr(status, "Status", -1))
            if code in PENDING and identifier is not None:
                found.append(identifier)
            elif code not in PENDING and code != SUCCESS:
                raise RetrieveError(f"C-FIND failed with status 0x{code & 0xFFFF:04X}", reason="find_failed")
        return found

    def candidates(self, since: dt.date | None, until: dt.date | None,
                   skip: Callable[[str], None]) -> Iterator[Candidate]:
        """Each ultrasound instance of each US study in the date range (lists a study at a time)."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae)
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.ModalitiesInStudy = "US"
            q.StudyDate = dicom_range(since, until)
            q.StudyInstanceUID = ""
            studies = [(str(s.StudyInstanceUID), parse_da(s.get("StudyDate"))) for s in self._find(assoc, q)
                       if s.get("StudyInstanceUID")]
        finally:
            assoc.release()
        log.info("C-FIND: %d US studies in the range", len(studies))
        for study_uid, study_date in studies:
            if not in_range(study_date, since, until):  # a PACS may ignore the date key
                skip("out_of_range")
                continue
            yield from self._instances(study_uid, study_date, skip)

    def _instances(self, study_uid: str, study_date: dt.date | None,
                   skip: Callable[[str], None]) -> Iterator[Candidate]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae)
        found: list[Candidate] = []
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = ""
            q.Modality = ""
            for series in self._find(assoc, q):
                series_uid = str(series.get("SeriesInstanceUID", ""))
                if str(series.get("Modality", "")).strip() not in ("US", "SR", ""):  # SR: the OB-GYN report
                    skip("not_ultrasound")  # a whole series of another modality (KO, PR, ...): instances not listed
                    continue
                qi = Dataset()
                qi.QueryRetrieveLevel = "IMAGE"
                qi.StudyInstanceUID = study_uid
                qi.SeriesInstanceUID = series_uid
                qi.SOPInstanceUID = ""
                qi.SOPClassUID = ""
                for inst in self._find(assoc, qi):
                    uid = str(inst.get("SOPInstanceUID", "")).strip()
                    sop_class = str(inst.get("SOPClassUID", "") or "")
                    if not uid:
                        continue
                    if sop_class and not is_intake_class(sop_class):
                        skip("not_ultrasound")
                        continue
                    found.append(Candidate(uid, sop_class or None, study_date, (study_uid, series_uid)))
        finally:
            assoc.release()
        yield from found

    # -- retrieval -----------------------------------------------------------------------------------

    def _retrieve_association(self) -> Association:
        if self._retrieve_assoc is not None and self._retrieve_assoc.is_established:
            return self._retrieve_assoc
        ae = self._ae()
        handlers: list[Any] = []
        roles = []
        if self.retrieve == "get":
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for sop_class in sorted(INTAKE_SOP_CLASSES):
                for syntax in STORAGE_TRANSFER_SYNTAXES:
                    ae.add_requested_context(sop_class, syntax)
                roles.append(build_role(sop_class, scp_role=True))  # we store what the C-GET sends back
            handlers = [(evt.EVT_C_STORE, self.arrivals.handle_store), *self._size_handlers()]
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            self._start_move_scp()
        self._retrieve_assoc = self._associate(ae, ext_neg=roles, evt_handlers=handlers)
        return self._retrieve_assoc

    def _size_handlers(self) -> list[Any]:
        """Abort an association once an instance passes FETALHC_MAX_INSTANCE_MB; delete what was cut off."""
        return [(evt.EVT_DATA_RECV, handle_data_recv, [int(self.settings.max_instance_mb * (1 << 20))]),
                (evt.EVT_CONN_CLOSE, handle_closed)]

    def _start_move_scp(self) -> None:
        if self._scp is not None:
            return
        settings = self.settings
        scp = GuardedAE(ae_title=self.move_ae)
        scp.require_called_aet = True
        scp.maximum_associations = settings.max_associations
        scp.dimse_timeout = scp.network_timeout = settings.dicom_timeout_s
        scp.acse_timeout = min(settings.dicom_timeout_s, settings.associate_timeout_s)
        for sop_class in sorted(INTAKE_SOP_CLASSES):
            scp.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [(evt.EVT_C_STORE, self.arrivals.handle_store), *self._size_handlers()]
        callers = parse_allowed_callers(settings.allowed_callers)
        if not callers.open:
            handlers.append((evt.EVT_REQUESTED, handle_requested, [callers]))
        self._scp = start_guarded_server(scp, (self.move_host, int(self.move_port or 0)), handlers,
                                         PeerLimits.from_settings(settings))
        log.info("C-MOVE destination %s listening on %s:%s", self.move_ae, self.move_host, self.move_port)

    def fetch(self, candidate: Candidate) -> Path:
        """Retrieve one instance into the spool (C-GET or C-MOVE at IMAGE level)."""
        study_uid, series_uid = candidate.ref
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = candidate.sop_instance_uid
        self.arrivals.expect(candidate.sop_instance_uid)
        last = None
        for attempt in (1, 2):  # one reconnect: the PACS may have closed an idle association
            assoc = self._retrieve_association()
            try:
                if self.retrieve == "get":
                    responses = assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)
                else:
                    responses = assoc.send_c_move(q, self.move_ae or "", StudyRootQueryRetrieveInformationModelMove)
                for status, _ in responses:
                    last = int(getattr(status, "Status", -1))
            except (RuntimeError, ValueError) as exc:
                last = None
                log.warning("retrieve association failed (%s)", type(exc).__name__)
            path = self.arrivals.take(candidate.sop_instance_uid)
            if path is not None:
                return path
            if last in (None, -1) and attempt == 1:  # aborted or timed out: reconnect once
                self._drop_retrieve_association()
                continue
            break
        code = "no answer" if last in (None, -1) else f"status 0x{last & 0xFFFF:04X}"
        raise RetrieveError(f"C-{self.retrieve.upper()} delivered nothing ({code})")

    def _drop_retrieve_association(self) -> None:
        if self._retrieve_assoc is not None:
            if self._retrieve_assoc.is_established:
                self._retrieve_assoc.abort()
            self._retrieve_assoc = None

    def close(self) -> None:
        """Release the retrieve association and stop the C-MOVE destination, if any."""
        if self._retrieve_assoc is not None and self._retrieve_assoc.is_established:
            self._retrieve_assoc.release()
        self._retrieve_assoc = None
        if self._scp is not None:
            self._scp.shutdown()
            self._scp = None
