"""ApiError, the parsed ``Request`` the upload parser reads, and the JSON encoding of every answer."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.responses import Response

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
    """One upload's request: ``path`` without query, ``query`` (first value of each name), the body."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


def json_bytes(obj: Any) -> bytes:
    """``obj`` as compact JSON (dates as ISO strings, NaN and infinities as null)."""
    return json.dumps(_jsonable(obj), allow_nan=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``obj`` as a JSON answer with the API's headers (no caching, no sniffing, no referrer)."""
    return Response(json_bytes(obj), status, {**API_HEADERS, **(headers or {})}, media_type="application/json")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic answer: its fields, then the rules below
        value = value.model_dump(mode="python")
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
