"""The project's error tree: permanent failures carry a reason, transient ones are retried.

Kept free of third-party imports so every room (dicom_io, models, db, worker) can share it. Every
error fetalhc raises on purpose is a ``FetalHCError``; ``transient`` says whether trying again later
can succeed (the queue retries those, and only those)::

    FetalHCError                      reason                      transient
    +-- TransientError                transient                   yes  database or broker down (worker.tasks)
    +-- ConfigError (ValueError)      config                      no   a FETALHC_* setting or option refused
    +-- SchemaError (RuntimeError)    schema_mismatch             no   the database needs an administrator (db)
    +-- RetrieveError (RuntimeError)  retrieve_failed, ...        yes  a PACS did not deliver (backfill)
    +-- SendError (RuntimeError)      send_failed                 yes  a destination did not take an SR
    +-- MeasurementError              no_measurement, ...         no   read, but no head measured
    |   +-- NotHeadPlane              not_head_plane              no   set aside by the head-plane gate
    +-- WeightsError                  weights                     no   model weights missing or wrong
    +-- DicomError ...                (dicom_io.errors)           no   unreadable, uncalibrated, unsupported
    +-- SrError (ValueError)          (dicom_io.errors)           no   no correct SR can be built
    +-- ApiError                      (worker.api.errors)         503s only: an HTTP answer other than 200

The standard-library bases in brackets keep older ``except ValueError`` / ``except RuntimeError``
callers working. The CLI catches ``FetalHCError`` once and prints one line.
"""

from __future__ import annotations


class FetalHCError(Exception):
    """Base of every error fetalhc raises on purpose.

    ``reason`` is a short machine-readable code stored on the failed row (e.g.
    ``uncalibrated``); the message is the human explanation. Both survive pickling
    (Celery ships exceptions between processes).
    """

    reason: str = "error"
    transient: bool = False

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message, reason)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class TransientError(FetalHCError):
    """A database or broker error worth retrying; its message names only the error's type.

    (The original error's text can hold SQL and values; the retry log line shows only this.)
    """

    reason = "transient"
    transient = True


class ConfigError(FetalHCError, ValueError):
    """A setting (``FETALHC_*``) or command-line option that cannot be used; the message names it and the choices."""

    reason = "config"


class SchemaError(FetalHCError, RuntimeError):
    """The database schema cannot be brought to this fetalhc's revision without a person deciding."""

    reason = "schema_mismatch"


class RetrieveError(FetalHCError, RuntimeError):
    """A PACS did not deliver an instance (association refused, failed sub-operation, timeout).

    Transient (the PACS may answer later) except ``wrong_instance``: it answered, with the wrong data.
    """

    reason = "retrieve_failed"

    def __init__(self, message: str, reason: str = "retrieve_failed") -> None:
        super().__init__(message, reason)
        self.transient = reason != "wrong_instance"


class SendError(FetalHCError, RuntimeError):
    """The destination did not take an SR (no association, refused context, failure status): sent again later."""

    reason = "send_failed"
    transient = True


class MeasurementError(FetalHCError):
    """The image was read, but no head could be measured on it (no skull found, bad fit)."""

    reason = "no_measurement"


class WeightsError(FetalHCError):
    """Model weights are missing, unreadable or do not match the network they claim."""

    reason = "weights"


class NotHeadPlane(MeasurementError):
    """The image is not a fetal head biometry plane (the head-plane gate refused it): set aside, not failed.

    ``score``: the gate's probability that it is a head plane; ``threshold``: the gate's operating point;
    ``why``: the plane decision's words (``models.plane.decision``; empty: the gate's score below its threshold).
    """

    reason = "not_head_plane"

    def __init__(self, message: str, reason: str | None = None, score: float = 0.0, threshold: float = 0.0,
                 why: str = "") -> None:
        super().__init__(message, reason)
        self.args = (message, reason, score, threshold, why)
        self.score = float(score)
        self.threshold = float(threshold)
        self.why = why
