"""DICOMweb backfill from a real Orthanc that requires HTTP basic credentials (FETALHC_DICOMWEB_*)."""

from __future__ import annotations

import base64
import datetime as dt
import glob
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.conftest import require
from tests.integration.test_orthanc import JAN, PLUGIN_GLOBS
from tests.services import running_orthanc
from tests.worker.ingest_support import free_port, make_settings, queued, tiny_us
from worker.backfill import open_source, run_backfill
from worker.backfill.dimse import RetrieveError

pytestmark = pytest.mark.integration
USER, PASSWORD = "fetalhc", "s3cret-pw"


@pytest.fixture(scope="module")
def locked_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An Orthanc whose REST and DICOMweb answer only to USER:PASSWORD; yields (DICOMweb root, SOP UID)."""
    plugins = [p for pattern in PLUGIN_GLOBS for p in sorted(glob.glob(pattern))]
    require(bool(plugins), "Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc-auth")
    with running_orthanc(root, free_port(), free_port(), Plugins=[plugins[0]],
                         DicomWeb={"Enable": True, "Root": "/dicom-web/"},
                         AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD}) as http:
        scan = tiny_us(root / "scan.dcm", dt.date(2025, 1, 15), seed=3)
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Content-Type": "application/dicom", "Authorization": f"Basic {auth}"}
        request = urllib.request.Request(f"{http}/instances", data=scan.read_bytes(), method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield f"{http}/dicom-web", str(pydicom.dcmread(scan, stop_before_pixels=True).SOPInstanceUID)


def test_without_credentials_the_refusal_is_named(locked_pacs: tuple[str, str], redis_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = locked_pacs
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    with pytest.raises(RetrieveError, match="HTTP 401: the server refused our credentials") as caught:
        run_backfill(settings, open_source(url, settings), *JAN, progress=False)
    assert PASSWORD not in str(caught.value)


def test_basic_credentials_from_the_settings_backfill_the_scan(locked_pacs: tuple[str, str], redis_url: str,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, uid = locked_pacs
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                             DICOMWEB_USER=USER, DICOMWEB_PASSWORD=PASSWORD)
    assert PASSWORD not in repr(settings)
    from db import upgrade

    upgrade(settings.database_url)
    summary = run_backfill(settings, open_source(url, settings), *JAN, progress=False)
    assert (summary.found, summary.queued, summary.failed) == (1, 1, 0)
    [message] = queued(redis_url, "backfill")
    assert pydicom.dcmread(message["path"]).SOPInstanceUID == uid


def test_wrong_password_is_refused_by_name(locked_pacs: tuple[str, str], redis_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = locked_pacs
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                             DICOMWEB_USER=USER, DICOMWEB_PASSWORD="wrong")
    with pytest.raises(RetrieveError, match="HTTP 401"):
        run_backfill(settings, open_source(url, settings), *JAN, progress=False)
