"""Request, Response and ApiError: what the API's handlers take, answer and raise, with the JSON encoding."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import FetalHCError

API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class ApiError(FetalHCError):
    """An answer other than 200: HTTP status, a short machine-readable ``reason`` and the message.

    Transient when the status is 503 (the database or model is not there yet: try again later).
    """

    def __init__(self, status: int, reason: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason)
        self.args = (status, reason, message, extra)
        self.status = status
        self.extra = extra or {}
        self.transient = status == 503

    def body(self) -> dict[str, Any]:
        """The JSON body: ``status`` (failed), ``reason``, ``message`` and any extra fields."""
        return {"status": "failed", "reason": self.reason, "message": self.message, **self.extra}


@dataclass(frozen=True)
class Request:
    """One parsed request: ``path`` without query, ``query`` (first value of each name), the body."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What a handler answers: status, body bytes, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    """``obj`` as JSON (dates as ISO strings, NaN and infinities as null)."""
    text = json.dumps(_jsonable(obj), allow_nan=False, separators=(",", ":"))
    return Response(status, text.encode(), "application/json", dict(API_HEADERS))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value
