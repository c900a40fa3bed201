"""The project's error tree: permanent failures carry a reason, transient ones are retried.

Kept free of third-party imports so every room (dicom_io, models, db, worker) can share it.
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


class MeasurementError(FetalHCError):
    """The image was read, but no head could be measured on it (no skull found, bad fit)."""

    reason = "no_measurement"


class WeightsError(FetalHCError):
    """Model weights are missing, unreadable or do not match the network they claim."""

    reason = "weights"


class NotHeadPlane(MeasurementError):
    """The image is not a fetal head biometry plane (the head-plane gate refused it): set aside, not failed.

    ``score``: the gate's probability that it is a head plane; ``threshold``: the gate's operating point.
    """

    reason = "not_head_plane"

    def __init__(self, message: str, reason: str | None = None, score: float = 0.0, threshold: float = 0.0) -> None:
        super().__init__(message, reason)
        self.args = (message, reason, score, threshold)
        self.score = float(score)
        self.threshold = float(threshold)
