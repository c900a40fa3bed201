"""Backfill source: a DICOMweb server. QIDO-RS lists US studies, series and instances; WADO-RS fetches.

Uses ``dicomweb-client`` for the searches. Each instance is retrieved by a plain streamed WADO-RS request
(``multipart/related; type="application/dicom"``): its bytes go to a staging file as they arrive, never more than
``FETALHC_MAX_INSTANCE_MB``, and are never parsed whole (dicomweb-client would parse each part with pydicom, which
inflates a deflated data set whole); the runner then takes the file in by the one intake rule
(``worker.ingest.intake``), like a C-STORE.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.backfill.dimse import RetrieveError, dicom_range, staging_path
from worker.backfill.folder import in_range, parse_da
from worker.backfill.runner import Candidate
from worker.core.settings import Settings
from worker.ingest.intake import is_intake_class
from worker.ingest.spool import FILE_MODE

log = logging.getLogger(__name__)

PAGE = 500  # QIDO-RS results asked for per request
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ATTEMPTS = 4  # a retrieve is tried this often (connection errors, 5xx), waiting 0.5, 1, 2 s between
_CHUNK = 1 << 20
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


def _private(path: Path) -> Any:
    """``path`` opened for writing with the spool's mode (a retrieved instance names its patient), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "wb")


def _boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/related`` answer; None for a single-part one (``application/dicom``)."""
    if not content_type.lower().startswith("multipart/"):
        return None
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise RetrieveError("WADO-RS answered multipart without a boundary", reason="retrieve_failed")
    return match.group(1).strip().encode("latin-1")


def _first_part(raw: Path, boundary: bytes, out: Path) -> None:
    """Copy the content of the first part of the multipart body in ``raw`` to ``out`` (streamed)."""
    delimiter = b"--" + boundary
    size = raw.stat().st_size
    with open(raw, "rb") as f:
        head = f.read(64 * 1024)
        start = head.find(delimiter)
        header_end = head.find(b"\r\n\r\n", start) if start >= 0 else -1
        if start < 0 or header_end < 0:
            raise RetrieveError("WADO-RS answer is not the multipart body it announced", reason="retrieve_failed")
        begin = header_end + 4
        length = re.search(rb"content-length:\s*(\d+)", head[start:header_end], re.IGNORECASE)
        if length is not None and begin + int(length.group(1)) <= size:
            end = begin + int(length.group(1))
        else:  # no length: up to the closing delimiter, looked for in the tail
            f.seek(max(size - 64 * 1024, begin))
            tail_at = f.tell()
            tail = f.read()
            close = tail.find(b"\r\n" + delimiter)
            end = tail_at + close if close >= 0 else size
        f.seek(begin)
        left = end - begin
        with _private(out) as dst:
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
            dst.flush()
            os.fsync(dst.fileno())


class DicomwebSource:
    """A DICOMweb service at ``url`` (its QIDO-RS and WADO-RS root, e.g. ``http://pacs/dicom-web``)."""

    def __init__(self, url: str, spool_dir: Path, client: Any = None, session: Any = None,
                 max_instance_bytes: int | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = session if session is not None else requests.Session()
        self.max_instance_bytes = max_instance_bytes if max_instance_bytes is not None else 2048 << 20
        self.in_place = False  # fetch stages a file: the runner takes it in and removes it
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
        """WADO-RS retrieve of one instance into a staging file of the spool (streamed, at most the size cap)."""
        study_uid, series_uid = candidate.ref
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}/instances/{candidate.sop_instance_uid}"
        raw = staging_path(self.spool_dir, candidate.sop_instance_uid).with_suffix(".part")
        raw.parent.mkdir(parents=True, exist_ok=True)
        try:
            content_type = self._download(url, raw)
            boundary = _boundary(content_type)
            if boundary is None:
                return raw.rename(raw.with_suffix(".dcm"))
            out = raw.with_suffix(".dcm")
            _first_part(raw, boundary, out)
            return out
        finally:
            raw.unlink(missing_ok=True)

    def _download(self, url: str, dest: Path) -> str:
        """GET ``url`` into ``dest``, retried on connection errors and 5xx; its Content-Type.

        Raises:
            RetrieveError: ``retrieve_failed``; ``too_large`` past the size cap (the transfer is cut off there).
        """
        from requests.exceptions import RequestException

        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.session.get(url, headers={"Accept": WADO_ACCEPT}, stream=True, timeout=60) as response:
                    if response.status_code >= 500 and attempt < ATTEMPTS:
                        time.sleep(0.25 * 2 ** attempt)
                        continue
                    response.raise_for_status()
                    declared = int(response.headers.get("Content-Length") or 0)
                    if declared > self.max_instance_bytes + 64 * 1024:
                        raise RetrieveError(f"WADO-RS answer of {declared >> 20} MiB is over FETALHC_MAX_INSTANCE_MB",
                                            reason="too_large")
                    written = 0
                    with _private(dest) as f:
                        for chunk in response.iter_content(_CHUNK):
                            written += len(chunk)
                            if written > self.max_instance_bytes + 64 * 1024:  # the multipart framing is small
                                raise RetrieveError("WADO-RS answer passed FETALHC_MAX_INSTANCE_MB: cut off",
                                                    reason="too_large")
                            f.write(chunk)
                    return str(response.headers.get("Content-Type") or "")
            except RetrieveError:
                raise
            except RequestException as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if attempt < ATTEMPTS and (status is None or status >= 500):
                    time.sleep(0.25 * 2 ** attempt)
                    continue
                raise RetrieveError(f"WADO-RS retrieve failed: {_describe(exc)}", reason="retrieve_failed") from exc
        raise RetrieveError("WADO-RS retrieve failed: no answer", reason="retrieve_failed")

    def close(self) -> None:
        """Nothing held open between requests."""
