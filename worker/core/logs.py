"""Logging setup: plain text or one JSON object per line (``FETALHC_LOG_FORMAT``), with job context.

Log lines name jobs by id, never by patient: no patient ID, name, birth date or accession
number is ever passed to a logger. The JSON formatter adds the job(s) the current task is
working on (``job_id`` or ``job_ids``), set by the tasks with ``job_context``.

Libraries are not so careful: pydicom warns ``Invalid value for VR DA: '19850312x'`` about a
birth date, and messages may carry file paths named after patients. Python warnings are routed
into logging, and every record from outside fetalhc passes through ``redact``: quoted values and
file paths are replaced before any handler writes them.

Example:
    >>> configure_logging("json", "INFO")
    >>> with job_context([42]):
    ...     logging.getLogger("worker").info("measured")   # {"time": ..., "job_id": 42, ...}
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CELERY_ARG_KEYS = frozenset({"args", "kwargs", "argsrepr", "kwargsrepr"})
_JOB_IDS: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("fetalhc_job_ids", default=())
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime",
                                                                                         "taskName"}


OWN_LOGGERS = ("worker", "dicom_io", "db", "models", "fetalhc", "__main__")
_QUOTED = re.compile(r"""(['"])(?:(?!\1).){1,512}?\1""")
_PATH = re.compile(r"""(?<![\w:/])(?:[A-Za-z]:)?(?:[/\\][^\s'"/\\]+){2,}[/\\]?""")


def redact(text: str) -> str:
    """``text`` with quoted values and file paths replaced by placeholders.

    Example:
        >>> redact("Invalid value for VR DA: '19850312x' in /archive/DOE_JANE/1.dcm")
        "Invalid value for VR DA: '<redacted>' in <path>"
    """
    text = _QUOTED.sub(lambda m: f"{m.group(1)}<redacted>{m.group(1)}", text)
    return _PATH.sub("<path>", text)


class RedactLibraryRecords(logging.Filter):
    """Rewrites records of other libraries' loggers (pydicom, pynetdicom, warnings) with ``redact``, and the
    traceback of every record (``log.exception`` of our own loggers included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:  # ours too: a traceback quotes values and paths
            record.exc_type = record.exc_info[0].__name__  # kept for the JSON formatter
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.name.split(".")[0] in OWN_LOGGERS:
            return True
        record.msg, record.args = redact(record.getMessage()), None
        return True


@contextmanager
def job_context(job_ids: Sequence[int]) -> Iterator[None]:
    """Mark log records emitted inside the block with these job ids."""
    token = _JOB_IDS.set(tuple(int(j) for j in job_ids))
    try:
        yield
    finally:
        _JOB_IDS.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, job id(s), extras."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        jobs = _JOB_IDS.get()
        if len(jobs) == 1:
            obj["job_id"] = jobs[0]
        elif jobs:
            obj["job_ids"] = list(jobs)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                obj[key] = value
        if isinstance(obj.get("data"), dict):  # Celery's task context: keep ids, drop arguments (file paths)
            obj["data"] = {k: v for k, v in obj["data"].items() if k not in _CELERY_ARG_KEYS}
        if record.exc_info and record.exc_info[0] is not None:
            obj["exc_type"] = record.exc_info[0].__name__
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and redacted) by RedactLibraryRecords
            obj["exc"] = record.exc_text
        return json.dumps(obj, default=str)


def configure_logging(fmt: str = "text", level: int | str = logging.WARNING, force: bool = False) -> None:
    """Send the root logger to stderr as ``fmt`` (text | json) at ``level``.

    Like ``logging.basicConfig``, it leaves a root logger that someone else has set up (a test
    runner, an embedding application) alone unless ``force``, which replaces every handler.

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"FETALHC_LOG_FORMAT={fmt!r}; choose one of: {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, "_fetalhc", False)]
    if foreign and not force:
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._fetalhc = True  # type: ignore[attr-defined]
    handler.addFilter(RedactLibraryRecords())
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn(...) from libraries goes through the filter too
    root.setLevel(level.upper() if isinstance(level, str) else level)
