"""DICOM SR of measurements stored into a real Orthanc (private process): sent live, and re-sent after an outage."""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.services import running_orthanc
from tests.worker.ingest_support import free_port
from worker.core.settings import get_settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Orthanc:
    """A running private Orthanc: REST root and DIMSE port (AE title ORTHANC)."""

    http: str
    dicom_port: int

    @property
    def url(self) -> str:
        return f"dimse://ORTHANC@127.0.0.1:{self.dicom_port}"

    def raw(self, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"{self.http}{path}", data=body, method="POST" if body else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def request(self, path: str, body: Any = None) -> Any:
        """JSON from the REST API (``body``: raw bytes, or an object sent as JSON)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        return json.loads(self.raw(path, data))

    def series_of_study(self, study_uid: str, modality: str) -> list[dict[str, Any]]:
        return self.request("/tools/find", {"Level": "Series", "Expand": True,
                                            "Query": {"StudyInstanceUID": study_uid, "Modality": modality}})

    def sr_datasets(self, study_uid: str) -> list[Dataset]:
        """Every SR instance Orthanc holds in the study, parsed."""
        out = []
        for series in self.series_of_study(study_uid, "SR"):
            for instance in series["Instances"]:
                out.append(pydicom.dcmread(io.BytesIO(self.raw(f"/instances/{instance}/file"))))
        return out


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A private Orthanc on 127.0.0.1 (free ports, no auth) that stores whatever is sent to it."""
    root = tmp_path_factory.mktemp("orthanc-sr")
    http_port, dicom_port = free_port(), free_port()
    with running_orthanc(root, http_port, dicom_port, Name="fetalhc-sr-test", DicomAlwaysAllowStore=True) as http:
        yield Orthanc(http, dicom_port)


def _scan(tmp_path: Path, orthanc: Orthanc, seed: int) -> tuple[Path, Dataset]:
    """A head phantom (region offset in the frame) stored in Orthanc, as the modality would have."""
    phantom = make_phantom(shape=(360, 480), hc_mm=175.0, spacing_mm=0.15, angle=0.4, seed=seed)
    path = write_us_image(tmp_path / f"scan{seed}.dcm", phantom.image, 0.15, identity=ScanIdentity(
        patient_id=f"PID-{seed}", patient_name="Test^Mother", study_date=dt.date(2026, 4, 1),
        accession_number=f"ACC{seed}"))
    orthanc.request("/instances", path.read_bytes())
    return path, pydicom.dcmread(path, stop_before_pixels=True)


def _process(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from worker.cli import main

    assert main(["process", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[0])


def _hc(sr: Dataset) -> float:
    def walk(ds: Dataset) -> Iterator[Dataset]:
        for item in ds.get("ContentSequence", []):
            yield item
            yield from walk(item)

    (hc,) = [i for i in walk(sr) if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "11984-2"]
    return float(hc.MeasuredValueSequence[0].NumericValue)


def test_sr_of_a_measured_scan_lands_in_its_study(orthanc: Orthanc, fetalhc_env: pytest.MonkeyPatch,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetalhc_env.setenv("FETALHC_SR_DESTINATION", orthanc.url)
    get_settings.cache_clear()
    path, source = _scan(tmp_path, orthanc, seed=4)

    row = _process(path, capsys)
    _process(path, capsys)  # measured again: the same SR instance, not a second one

    assert row["status"] in ("measured", "needs_review")
    (sr,) = orthanc.sr_datasets(source.StudyInstanceUID)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert (sr.PatientID, sr.AccessionNumber) == (source.PatientID, source.AccessionNumber)
    assert _hc(sr) == pytest.approx(row["hc_mm"], abs=0.005)
    assert len(orthanc.series_of_study(source.StudyInstanceUID, "US")) == 1  # the scan's own series, beside it
    assert list((get_settings().spool_dir / "sr").glob("*.dcm")) == []  # sent: nothing left to re-send


def test_an_outage_keeps_the_sr_and_sr_send_delivers_it(orthanc: Orthanc, fetalhc_env: pytest.MonkeyPatch,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    fetalhc_env.setenv("FETALHC_SR_DESTINATION", f"dimse://ORTHANC@127.0.0.1:{free_port()}")  # nobody there
    get_settings.cache_clear()
    path, source = _scan(tmp_path, orthanc, seed=5)

    row = _process(path, capsys)  # the measurement is stored whatever happened to its SR
    outbox = get_settings().spool_dir / "sr"
    assert row["hc_mm"] is not None and len(list(outbox.glob("*.dcm"))) == 1
    assert orthanc.series_of_study(source.StudyInstanceUID, "SR") == []

    code = main(["sr", "send", str(outbox), "--destination", orthanc.url, "--remove-sent", "--json"])

    assert code == 0 and json.loads(capsys.readouterr().out)["sent"] == 1
    (sr,) = orthanc.sr_datasets(source.StudyInstanceUID)
    assert _hc(sr) == pytest.approx(row["hc_mm"], abs=0.005)
    assert list(outbox.glob("*.dcm")) == []
