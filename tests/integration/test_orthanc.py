"""Backfill against a real Orthanc (private process): DIMSE C-FIND + C-GET / C-MOVE, and DICOMweb."""

from __future__ import annotations

import datetime as dt
import glob
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLosslessSV1, generate_uid
from sqlalchemy import select

from db import Job, session_scope
from tests.conftest import require
from tests.services import running_orthanc
from tests.worker.ingest_support import free_port, make_settings, queued, tiny_us
from worker.backfill import run_backfill
from worker.backfill.dicomweb import DicomwebSource
from worker.backfill.dimse import DimseSource
from worker.queue.celery_app import LIVE_QUEUE
from worker.ingest import accept_instance

pytestmark = pytest.mark.integration

JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))
PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*", "/usr/lib/orthanc/libOrthancDicomWeb.so*",
                "/usr/lib/*/orthanc/libOrthancDicomWeb.so*")


@dataclass(frozen=True)
class Pacs:
    """A running Orthanc and what was loaded into it."""

    http: str
    dicom_port: int
    move_port: int
    january_us: frozenset[str]  # US SOP Instance UIDs with a January 2025 study date
    all_us: frozenset[str]
    jpeg_uid: str


def _upload(http: str, path: Path) -> None:
    request = urllib.request.Request(f"{http}/instances", data=path.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _load(http: str, folder: Path) -> tuple[set[str], set[str], str]:
    """Study A (Jan): two US + a CT series; study B (Mar): one US; study C (Jan): a JPEG-lossless US."""
    study_a = generate_uid()
    january, files = set(), []
    for i in range(2):
        files.append(tiny_us(folder / f"a{i}.dcm", dt.date(2025, 1, 10), seed=i, study_uid=study_a))
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ct.StudyInstanceUID, ct.StudyDate, ct.SOPInstanceUID = study_a, "20250110", generate_uid()
    ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
    ct.save_as(folder / "ct.dcm")
    files.append(folder / "ct.dcm")
    files.append(tiny_us(folder / "b.dcm", dt.date(2025, 3, 1), seed=7))
    jpeg = pydicom.dcmread(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm", download=False))
    jpeg.StudyDate = "20250120"
    jpeg.save_as(folder / "jpeg.dcm")  # pixel data stays JPEG lossless
    files.append(folder / "jpeg.dcm")
    for path in files:
        _upload(http, path)
    uid = {p.name: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    january = {uid["a0.dcm"], uid["a1.dcm"], uid["jpeg.dcm"]}
    return january, january | {uid["b.dcm"]}, uid["jpeg.dcm"]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """A private Orthanc on 127.0.0.1 (free ports, no auth, DICOMweb plugin), loaded with test scans."""
    plugins = [p for pattern in PLUGIN_GLOBS for p in sorted(glob.glob(pattern))]
    require(bool(plugins), "Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, move_port = free_port(), free_port(), free_port()
    modalities = {
        # We query and C-GET as FETALHC; C-MOVE sends to our temporary SCP FETALHC_BF.
        "fetalhc": {"AET": "FETALHC", "Host": "127.0.0.1", "Port": 11112,
                    "AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": True},
        "fetalhc_bf": {"AET": "FETALHC_BF", "Host": "127.0.0.1", "Port": move_port},
    }
    with running_orthanc(root, http_port, dicom_port, DicomModalities=modalities, Plugins=[plugins[0]],
                         DicomWeb={"Enable": True, "Root": "/dicom-web/"}) as http:
        january, all_us, jpeg_uid = _load(http, root / "scans")
        yield Pacs(http, dicom_port, move_port, frozenset(january), frozenset(all_us), jpeg_uid)


def _jobs(url: str) -> list[Job]:
    with session_scope(url) as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_dimse_cfind_cget_queues_january_us_and_resumes(pacs: Pacs, pg_url: str, redis_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path)

    def source() -> DimseSource:
        return DimseSource("127.0.0.1", pacs.dicom_port, "ORTHANC", "FETALHC", settings.spool_dir)

    summary = run_backfill(settings, source(), *JAN, progress=False)

    assert (summary.found, summary.queued, summary.failed) == (3, 3, 0), summary.line()
    assert summary.skipped == {"not_ultrasound": 1}  # the CT series of study A
    jobs = _jobs(pg_url)
    assert {j.sop_instance_uid for j in jobs} == pacs.january_us
    assert {(j.source, j.queue, j.status) for j in jobs} == {("backfill", "backfill", "queued")}
    assert {j.path for j in jobs} == {str(settings.spool_dir / f"{u}.dcm") for u in pacs.january_us}
    assert [m["job_id"] for m in queued(redis_url, "backfill")] == [j.id for j in jobs]
    assert queued(redis_url, "live") == []
    jpeg = pydicom.dcmread(settings.spool_dir / f"{pacs.jpeg_uid}.dcm", stop_before_pixels=True)
    assert jpeg.file_meta.TransferSyntaxUID == JPEGLosslessSV1  # C-GET delivered it as stored

    again = run_backfill(settings, source(), *JAN, progress=False)  # interrupted/finished run started again
    assert (again.found, again.queued, again.skipped["in_flight"]) == (3, 0, 3)


def test_dimse_cmove_through_the_cli(pacs: Pacs, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    code = main(["backfill", f"dimse://ORTHANC@127.0.0.1:{pacs.dicom_port}", "--retrieve", "move",
                 "--move-ae", "FETALHC_BF", "--move-port", str(pacs.move_port), "--no-progress", "--json"])
    out = json.loads(capsys.readouterr().out)

    assert code == 0 and (out["found"], out["queued"], out["failed"]) == (4, 4, 0), out
    assert {j.sop_instance_uid for j in _jobs(settings.database_url)} == pacs.all_us
    assert len(queued(redis_url, "backfill")) == 4


def test_dicomweb_backfill_skips_a_scan_already_received_live(pacs: Pacs, redis_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    from db import upgrade

    upgrade(settings.database_url)
    # The JPEG scan also arrived live (C-STORE from the modality) and is still waiting for a worker.
    live = accept_instance(settings, pacs.jpeg_uid, Path(get_testdata_file(
        "JPGLosslessP14SV1_1s_1f_8b.dcm", download=False)).read_bytes(), "live", LIVE_QUEUE)

    summary = run_backfill(settings, DicomwebSource(f"{pacs.http}/dicom-web", settings.spool_dir), *JAN,
                           progress=False)

    assert (summary.found, summary.queued, summary.skipped["in_flight"], summary.failed) == (3, 2, 1, 0)
    jobs = _jobs(settings.database_url)
    assert {j.sop_instance_uid for j in jobs if j.source == "backfill"} == pacs.january_us - {pacs.jpeg_uid}
    assert [m["job_id"] for m in queued(redis_url, "live")] == [live.job_id]
    backfilled = queued(redis_url, "backfill")
    assert len(backfilled) == 2
    for message in backfilled:
        ds = pydicom.dcmread(message["path"])
        assert ds.Modality == "US" and ds.StudyDate.startswith("202501")
