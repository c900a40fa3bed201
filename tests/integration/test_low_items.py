"""The low items of issue 21, each attacked as the issue says.

* ``GET /api/jobs/%C2%B2`` ("²": a digit to ``str.isdigit``, not to ``int``) and ``?patient_id=%00`` on PostgreSQL
  answer 400, not 500 or 503, while ``/healthz`` stays 200;
* an SR file in the outbox is readable by its owner only (whatever the umask) and does not name the patient;
* a JPEG 2000 codestream of 1 x 1 tiles, and an 80 MB element before the pixel data, are refused against
  ``FETALHC_MAX_SCAN_MB`` (64 here) before they allocate (read in a fresh interpreter, its own peak read);
* a report nested 100,000 deep is acknowledged by the listener and recorded (a malformed report, its job finished
  with that reason), not dropped;
* backfill refuses an instance over ``FETALHC_MAX_INSTANCE_MB``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import select

from db import Job, session_scope, upgrade
from db.tables import ObReportRow
from dicom_io.ob_report import COMPREHENSIVE_SR
from dicom_io.reader import read_sop_identity
from dicom_io.writer import write_us_image
from tests.worker.ingest_support import free_port, ingest_settings, make_settings, tiny_us  # noqa: F401
from worker.core.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the API -----------------------------------------------------------------------------------------------------

@pytest.fixture()
def pg_api(monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    from worker.api import make_server

    make_settings(monkeypatch, redis_url, pg_url, tmp_path)
    server = make_server(get_settings(), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _status(url: str) -> int:
    try:
        with _OPENER.open(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_api_answers_400_to_a_superscript_job_id_and_a_nul_patient_id(pg_api: str) -> None:
    assert _status(pg_api + "/api/jobs/%C2%B2") == 400
    assert _status(pg_api + "/api/results?patient_id=%00") == 400
    assert _status(pg_api + "/api/results.csv?study_uid=1.2%01") == 400
    assert _status(pg_api + "/api/results?patient_id=P1") == 200
    assert _status(pg_api + "/healthz") == 200


# -- the SR outbox ------------------------------------------------------------------------------------------------

def test_sr_outbox_files_are_owner_only_and_do_not_name_the_patient(tmp_path: Path) -> None:
    from dicom_io.phantom import make_phantom
    from dicom_io.sr import HeadMeasurement, build_sr, write_sr
    from dicom_io.writer import ScanIdentity

    phantom = make_phantom(shape=(300, 400), hc_mm=150.0, spacing_mm=0.15, seed=2)
    path = write_us_image(tmp_path / "us.dcm", phantom.image, 0.15,
                          identity=ScanIdentity(patient_id="PID-7", patient_name="Doe^Jane"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    cx, cy, a, b, angle = phantom.outer
    m = HeadMeasurement(sop_instance_uid=str(ds.SOPInstanceUID), frame=1, hc_mm=151.2, bpd_mm=2 * b * 0.15,
                        ofd_mm=2 * a * 0.15, status="measured", model_name="unet-hc18", model_version="ab" * 32,
                        quality=0.87, flags=(), ga_estimate_days=None, ga_formula=None,
                        ellipse_mm=(cx * 0.15, cy * 0.15, a * 0.15, b * 0.15, angle), spacing_mm=(0.15, 0.15),
                        spacing_source="us_region", region_origin_px=(0, 0))
    before = os.umask(0o022)
    try:
        written = write_sr(tmp_path / "outbox", build_sr(ds, m))
    finally:
        os.umask(before)
    assert written.stat().st_mode & 0o777 == 0o600
    sr = pydicom.dcmread(written)
    assert sr.PatientID == "PID-7" and sr.PatientName == ""
    assert b"Doe^Jane" not in written.read_bytes()
    assert pydicom.dcmread(path, stop_before_pixels=True).PatientName == "Doe^Jane"  # the source is untouched


# -- decoding bounds ----------------------------------------------------------------------------------------------

_READ = """
import json, sys
from dicom_io import DicomError, iter_scans
from dicom_io.bounds import scan_budget
reason = None
try:
    with scan_budget(float(sys.argv[2])):
        for _ in iter_scans(sys.argv[1]):
            pass
except DicomError as exc:
    reason = exc.reason
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"reason": reason, "peak_mb": int(hwm.split()[1]) / 1024}))
"""


def _read(path: Path | None, budget_mb: float = 64) -> dict[str, object]:
    code = _READ if path is not None else (
        "import json\nimport dicom_io.reader, av\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(json.dumps({'reason': None, 'peak_mb': int(hwm.split()[1]) / 1024}))")
    argv = [sys.executable, "-c", code] + ([str(path), str(budget_mb)] if path is not None else [])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (480, 640), dtype=np.uint8)


def test_a_jpeg2000_frame_of_tiny_tiles_is_refused_against_the_scan_budget(tmp_path: Path) -> None:
    path = write_us_image(tmp_path / "tiles.dcm", _image(), 0.15, encoding="jpeg2000")
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\x4f\xff\x51") + 4 + 20  # SIZ: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, then XTsiz, YTsiz
    data[at:at + 8] = struct.pack(">II", 1, 1)  # 640 x 480 tiles of one pixel
    path.write_bytes(bytes(data))
    baseline = float(_read(None)["peak_mb"])  # type: ignore[arg-type]
    result = _read(path)
    assert result["reason"] == "over_memory_budget"
    assert float(result["peak_mb"]) < baseline + 100, result  # type: ignore[arg-type]
    honest = write_us_image(tmp_path / "honest.dcm", _image(), 0.15, encoding="jpeg2000")
    assert _read(honest)["reason"] is None  # one tile: decoded as before


def test_an_80_mb_element_before_the_pixels_counts_against_the_scan_budget(tmp_path: Path) -> None:
    path = write_us_image(tmp_path / "big.dcm", _image(), 0.15)
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091010, "LO", "FETALHC TEST")  # private creator
    ds.add_new(0x00091011, "OB", bytes(80 << 20))
    ds.save_as(path)
    del ds
    baseline = float(_read(None)["peak_mb"])  # type: ignore[arg-type]
    result = _read(path, budget_mb=64)
    assert result["reason"] == "over_memory_budget"
    assert float(result["peak_mb"]) < baseline + 60, result  # type: ignore[arg-type]
    assert _read(path, budget_mb=256)["reason"] is None  # within a larger budget it is read (the element is not)


# -- a report nested 100,000 deep ----------------------------------------------------------------------------------

def _nested_report(path: Path, depth: int) -> Path:
    """An SR whose Content Sequence nests ``depth`` items deep (3.6 MB at 100,000), written byte by byte."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = COMPREHENSIVE_SR, generate_uid(), "SR"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "PHI-NESTED-1", generate_uid(), generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                                                           0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with open(path, "ab") as f:
        f.write(opening * depth + closing * depth)
    return path


def test_a_report_nested_100000_deep_is_acknowledged_and_recorded(monkeypatch: pytest.MonkeyPatch, pg_url: str,
                                                                  redis_url: str, tmp_path: Path) -> None:
    from worker.ingest.listener import start_listener
    from worker.queue.tasks import measure

    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path)
    report = _nested_report(tmp_path / "nested.dcm", 100_000)
    uid = read_sop_identity(report)[1]  # pydicom itself recurses too deep on this file
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        from tests.integration.test_hostile_listener import chunked_send

        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(COMPREHENSIVE_SR, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
        assert assoc.is_established
        try:
            with chunked_send():
                assert int(assoc.send_c_store(report).Status) == 0  # acknowledged...
        finally:
            assoc.release()
    finally:
        server.shutdown()
    with session_scope(pg_url) as s:
        [(job_id, path)] = s.execute(select(Job.id, Job.path)).all()  # ...and kept, with a job
    result = measure.run(job_id, path, None)
    assert result["reason"] == "malformed_report"
    with session_scope(pg_url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.reason) == ("done", "malformed_report")
        assert "cannot be parsed" in (job.detail or "")
        [row] = s.scalars(select(ObReportRow)).all()
        assert (row.sop_instance_uid, row.status) == (uid, "malformed")


# -- backfill's instance size cap ----------------------------------------------------------------------------------

def test_backfill_refuses_an_instance_over_the_size_cap(ingest_settings: Settings, tmp_path: Path) -> None:
    from worker.backfill.folder import FolderSource
    from worker.backfill.runner import run_backfill

    upgrade(ingest_settings.database_url)
    archive = tmp_path / "archive"
    write_us_image(archive / "big.dcm", np.zeros((20, 1024, 1024), np.uint8), 0.2)  # 20 MB of pixels
    tiny_us(archive / "small.dcm", dt.date(2025, 1, 10))
    summary = run_backfill(ingest_settings.replace(max_instance_mb=8), FolderSource(archive), progress=False)
    assert (summary.found, summary.queued, summary.failed) == (2, 1, 1), summary.line()
    assert summary.failures == {"too_large": 1}
