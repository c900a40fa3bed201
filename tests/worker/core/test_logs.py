"""Structured logs: one JSON object per line, job ids attached, task arguments left out."""

from __future__ import annotations

import io
import json
import logging

import pytest

from worker.core.logs import JsonFormatter, configure_logging, job_context


def _emit(record_logger: str, *args: object, **kwargs: object) -> dict:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(record_logger)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    [line] = buffer.getvalue().splitlines()
    return json.loads(line)


def test_a_record_is_one_json_object_with_time_level_logger_message() -> None:
    obj = _emit("fetalhc.test", "measured %d scans", 3)

    assert obj["message"] == "measured 3 scans"
    assert (obj["level"], obj["logger"]) == ("INFO", "fetalhc.test")
    assert obj["time"].endswith("+00:00") and "T" in obj["time"]
    assert "job_id" not in obj


def test_job_context_and_extras_are_fields() -> None:
    with job_context([41]):
        one = _emit("fetalhc.test", "x", extra={"requeued": 2})
    with job_context([1, 2]):
        several = _emit("fetalhc.test", "y")

    assert one["job_id"] == 41 and one["requeued"] == 2
    assert several["job_ids"] == [1, 2]


def test_celery_task_arguments_are_dropped() -> None:
    obj = _emit("celery.worker.strategy", "Task %(name)s[%(id)s] received",
                extra={"data": {"id": "abc", "name": "fetalhc.measure", "args": "[1, '/spool/DOE_JANE/x.dcm']",
                                "kwargs": "{}"}})

    assert obj["data"] == {"id": "abc", "name": "fetalhc.measure"}
    assert "DOE_JANE" not in json.dumps(obj)


def test_exceptions_keep_their_type_and_traceback() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fetalhc.test.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    obj = json.loads(buffer.getvalue())
    assert obj["exc_type"] == "KeyError" and "Traceback" in obj["exc"]


def test_unknown_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.core.settings import Settings

    with pytest.raises(ValueError, match="text, json"):
        configure_logging("xml")
    monkeypatch.setenv("FETALHC_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="FETALHC_LOG_FORMAT"):
        Settings()


@pytest.fixture
def root_logging():
    """Restore the root logger (handlers, level) and warnings routing after a test configures them."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    logging.captureWarnings(False)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_library_messages_lose_patient_values_and_paths(tmp_path, capsys, root_logging) -> None:
    import warnings

    from pydicom.dataset import Dataset

    path = tmp_path / "DOE_JANE" / "scan.dcm"
    configure_logging("json", "INFO", force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        copy = Dataset()  # as when a header is copied into a derived object (an SR, a converted image)
        copy.PatientBirthDate = "1985-03-12"  # pydicom warns and logs: Invalid value for VR DA: '1985-03-12'
        warnings.warn(f"could not decode {path}", UserWarning)
    logging.getLogger("pynetdicom.events").warning("cannot open %s for 'DOE^JANE'", path)
    logging.getLogger("worker.measure.pipeline").info("job %s: reason '%s'", 7, "uncalibrated")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    text = json.dumps(lines)
    assert "1985-03-12" not in text and "DOE" not in text and str(tmp_path) not in text
    messages = {(line["logger"], line["message"]) for line in lines}
    assert ("pydicom", "Invalid value for VR DA: '<redacted>'.") in messages
    assert any(logger == "py.warnings" and "could not decode <path>" in msg for logger, msg in messages)
    assert ("pynetdicom.events", "cannot open <path> for '<redacted>'") in messages
    assert ("worker.measure.pipeline", "job 7: reason 'uncalibrated'") in messages  # our own lines are left alone


def test_library_exceptions_are_redacted_too(capsys, root_logging) -> None:
    configure_logging("text", "INFO", force=True)
    try:
        raise ValueError("bad value 'DOE^JANE' in /data/DOE_JANE/x.dcm")
    except ValueError:
        logging.getLogger("celery.worker").exception("task failed")
    err = capsys.readouterr().err
    assert "task failed" in err and "ValueError: bad value '<redacted>' in <path>" in err
    assert "DOE" not in err
