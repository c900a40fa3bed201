"""``fetalhc conflicts``: a conflict recorded by the intake rule, shown to the administrator who asks (not logged)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from db import upgrade
from tests.worker.ingest_support import ingest_settings, tiny_us  # noqa: F401
from worker.core.settings import Settings
from worker.ingest.intake import accept_instance


def test_cli_lists_a_conflict_with_both_patients(ingest_settings: Settings, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from worker.cli import main

    upgrade(ingest_settings.database_url)
    first = tiny_us(tmp_path / "a.dcm", seed=1, patient_id="PHI-A-1")
    uid = str(pydicom.dcmread(first).SOPInstanceUID)
    other = pydicom.dcmread(first)
    other.PatientID = "PHI-B-2"
    other.save_as(tmp_path / "b.dcm")
    accept_instance(ingest_settings, uid, first, "live", "live")
    intake = accept_instance(ingest_settings, uid, tmp_path / "b.dcm", "watch", "live")
    assert intake.conflict == "other_patient" and not intake.queued
    assert "PHI-A-1" not in caplog.text and "PHI-B-2" not in caplog.text

    assert main(["conflicts", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["sop_instance_uid"], row["reason"], row["source"]) == (uid, "other_patient", "watch")
    assert (row["patient_id_existing"], row["patient_id_received"], row["job_id"]) == ("PHI-A-1", "PHI-B-2",
                                                                                       intake.job_id)
    assert main(["conflicts"]) == 0 and "other_patient" in capsys.readouterr().out
