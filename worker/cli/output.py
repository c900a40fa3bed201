"""What the commands print: JSON lines (dates as ISO strings) for scripts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=_json_default))
