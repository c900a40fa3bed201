"""The one error tree: every error fetalhc raises on purpose is a FetalHCError, transient ones apart."""

from __future__ import annotations

import pickle

import pytest

from db import FINISHED_JOB_STATUSES, JOB_STATUS_OF, REPORTABLE_STATUSES, UNFINISHED_JOB_STATUSES, JobStatus
from db import MeasurementStatus, SchemaError
from dicom_io.errors import CalibrationError, DicomError, SrError
from dicom_io.sr import REPORTABLE
from models.errors import (
    ConfigError,
    FetalHCError,
    MeasurementError,
    NotHeadPlane,
    RetrieveError,
    SendError,
    TransientError,
    WeightsError,
)
from worker.api.messages import ApiError


@pytest.mark.parametrize("error", [
    TransientError("database: OperationalError"), ConfigError("FETALHC_X=1; choose one of: a, b"),
    SchemaError("unknown revision"), RetrieveError("C-FIND failed", reason="find_failed"), SendError("no association"),
    MeasurementError("no skull"), NotHeadPlane("no head", score=0.1, threshold=0.4), WeightsError("missing"),
    DicomError("truncated"), CalibrationError("no spacing"), SrError("no SR for a failed row"),
    ApiError(503, "database_unavailable", "try again later")])
def test_every_error_is_a_fetalhc_error_that_pickles(error: FetalHCError) -> None:
    assert isinstance(error, FetalHCError)
    again = pickle.loads(pickle.dumps(error))  # Celery ships exceptions between processes
    assert (type(again), str(again), again.reason, again.transient) == (
        type(error), str(error), error.reason, error.transient)


def test_transient_and_permanent_are_kept_apart() -> None:
    transient = [TransientError("x"), SendError("x"), RetrieveError("x"), ApiError(503, "busy", "x")]
    permanent = [ConfigError("x"), SchemaError("x"), MeasurementError("x"), WeightsError("x"), DicomError("x"),
                 SrError("x"), RetrieveError("x", reason="wrong_instance"), ApiError(422, "bad_parameter", "x")]
    assert all(e.transient for e in transient)
    assert not any(e.transient for e in permanent)


def test_older_callers_still_catch_them_as_before() -> None:
    assert isinstance(ConfigError("x"), ValueError) and isinstance(SrError("x"), ValueError)
    assert isinstance(SchemaError("x"), RuntimeError) and isinstance(RetrieveError("x"), RuntimeError)
    assert (RetrieveError("x").reason, SchemaError("x").reason) == ("retrieve_failed", "schema_mismatch")


def test_status_sets_are_defined_once_and_agree() -> None:
    assert set(UNFINISHED_JOB_STATUSES) | set(FINISHED_JOB_STATUSES) == set(JobStatus)
    assert not set(UNFINISHED_JOB_STATUSES) & set(FINISHED_JOB_STATUSES)
    assert set(JOB_STATUS_OF) == set(MeasurementStatus) and set(JOB_STATUS_OF.values()) == set(FINISHED_JOB_STATUSES)
    assert tuple(REPORTABLE) == tuple(REPORTABLE_STATUSES)  # dicom_io's own list is the database's
    assert JobStatus.DONE == "done" and f"{JobStatus.NOT_HEAD}" == "not_head"  # StrEnum: the value everywhere
    assert "needs_review" in FINISHED_JOB_STATUSES


def test_the_cli_turns_a_fetalhc_error_into_one_line_and_exit_1(
        fetalhc_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from worker.cli import main

    fetalhc_env.setenv("FETALHC_WEIGHTS", str(tmp_path / "missing.pt"))
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(b"not read: the model is loaded first")
    assert main(["process", str(scan)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fetalhc process: error: "), err
