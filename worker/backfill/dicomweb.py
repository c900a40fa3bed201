"""Backfill source: a DICOMweb server. QIDO-RS lists US studies, series and instances; WADO-RS fetches.

Uses ``dicomweb-client``. Each instance retrieved is written to the spool (named by SOP Instance
UID, atomically) and queued from there, like a C-STORE.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from worker.backfill.dimse import RetrieveError, dicom_range
from worker.backfill.folder import in_range, parse_da
from worker.backfill.runner import Candidate
from worker.core.settings import Settings
from worker.ingest.intake import is_intake_class
from worker.ingest.spool import write_instance

log = logging.getLogger(__name__)

PAGE = 500  # QIDO-RS results asked for per request
# DICOM JSON (PS3.18 F.2) tags of the attributes read from QIDO-RS answers.
STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS, STUDY_DATE, MODALITY = (
    "0020000D", "0020000E", "00080018", "00080016", "00080020", "00080060")


def _value(obj: dict[str, Any], tag: str) -> str:
    values = obj.get(tag, {}).get("Value") or [""]
    return str(values[0] or "").strip()


def _paged(search: Callable[..., list[dict[str, Any]]], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every result of a QIDO-RS search, ``PAGE`` at a time (``limit``/``offset``).

    Stops on a short page, or on a page with nothing new: some servers ignore ``offset`` and
    would otherwise be asked forever (dicomweb-client's ``get_remaining`` loops on those).
    """
    from requests.exceptions import RequestException

    offset, seen = 0, set()
    while True:
        try:
            page = search(*args, limit=PAGE, offset=offset, **kwargs)
        except RequestException as exc:
            raise RetrieveError(f"QIDO-RS search failed: {_describe(exc)}", reason="search_failed") from exc
        new = [item for item in page if json.dumps(item, sort_keys=True) not in seen]
        seen.update(json.dumps(item, sort_keys=True) for item in new)
        yield from new
        if len(page) < PAGE or not new:
            return
        offset += len(page)


def _describe(exc: Exception) -> str:
    """An HTTP error's status (with a hint for refused credentials), else the exception's type; never a URL."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"HTTP {status}: the server refused our credentials (FETALHC_DICOMWEB_USER/PASSWORD or "
                "FETALHC_DICOMWEB_TOKEN)")
    return f"HTTP {status}" if status else type(exc).__name__


def dicomweb_session(settings: Settings) -> Any:
    """A ``requests`` session with the settings' DICOMweb credentials and CA bundle (none by default)."""
    import requests

    session = requests.Session()
    if settings.dicomweb_token:
        session.headers["Authorization"] = f"Bearer {settings.dicomweb_token.get_secret_value()}"
    elif settings.dicomweb_user and settings.dicomweb_password:
        session.auth = (settings.dicomweb_user, settings.dicomweb_password.get_secret_value())
    if settings.dicomweb_ca_bundle is not None:
        session.verify = str(settings.dicomweb_ca_bundle)
    return session


def _file_bytes(ds: Dataset) -> bytes:
    """A dataset from WADO-RS as a whole DICOM file (preamble and file meta)."""
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class DicomwebSource:
    """A DICOMweb service at ``url`` (its QIDO-RS and WADO-RS root, e.g. ``http://pacs/dicom-web``)."""

    def __init__(self, url: str, spool_dir: Path, client: Any = None, session: Any = None) -> None:
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            client = DICOMwebClient(url=url.rstrip("/"), session=session)
            # Failed requests (refused connections too) are retried with backoff: 0.5 s, 1 s, 2 s.
            client.set_http_retry_params(retry=True, max_attempts=4, wait_exponential_multiplier=250)
        self.client = client
        self.spool_dir = spool_dir
        self.label = "dicomweb"

    def candidates(self, since: dt.date | None, until: dt.date | None,
                   skip: Callable[[str], None]) -> Iterator[Candidate]:
        """Each ultrasound instance of each US study in the range (paged; a study at a time)."""
        filters = {"ModalitiesInStudy": "US"}
        if since or until:
            filters["StudyDate"] = dicom_range(since, until)
        studies = list(_paged(self.client.search_for_studies, search_filters=filters))
        log.info("QIDO-RS: %d US studies in the range", len(studies))
        for study in studies:
            study_uid, study_date = _value(study, STUDY_UID), parse_da(_value(study, STUDY_DATE))
            if not study_uid:
                continue
            if not in_range(study_date, since, until):  # a server may ignore the date filter
                skip("out_of_range")
                continue
            for series in list(_paged(self.client.search_for_series, study_uid)):
                series_uid = _value(series, SERIES_UID)
                if _value(series, MODALITY) not in ("US", "SR", ""):  # SR: the scanner's OB-GYN report
                    skip("not_ultrasound")
                    continue
                for inst in list(_paged(self.client.search_for_instances, study_uid, series_uid)):
                    uid, sop_class = _value(inst, SOP_UID), _value(inst, SOP_CLASS)
                    if not uid:
                        continue
                    if sop_class and not is_intake_class(sop_class):
                        skip("not_ultrasound")
                        continue
                    yield Candidate(uid, sop_class or None, study_date, (study_uid, series_uid))

    def fetch(self, candidate: Candidate) -> Path:
        """WADO-RS retrieve of one instance into the spool."""
        study_uid, series_uid = candidate.ref
        try:
            ds = self.client.retrieve_instance(study_uid, series_uid, candidate.sop_instance_uid)
        except Exception as exc:  # noqa: BLE001 - requests/HTTP errors of any kind: this scan failed
            raise RetrieveError(f"WADO-RS retrieve failed: {_describe(exc)}", reason="retrieve_failed") from exc
        if str(ds.get("SOPInstanceUID", "")) != candidate.sop_instance_uid:
            raise RetrieveError("WADO-RS returned a different instance than asked for", reason="wrong_instance")
        return write_instance(self.spool_dir, candidate.sop_instance_uid, _file_bytes(ds))

    def close(self) -> None:
        """Nothing held open between requests."""
