"""The handlers that need no token: the web page and the health check."""

from __future__ import annotations

import logging

from db import get_engine
from worker.api.app import ApiApp
from worker.api.messages import Request, Response, json_response
from worker.webpage import PAGE_HEADERS, PAGE_HTML

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)


def handle_page(app: ApiApp, req: Request) -> Response:
    """The web page (no token needed: it holds no data; its requests send the token)."""
    return Response(200, PAGE_HTML.encode(), "text/html; charset=utf-8", dict(PAGE_HEADERS))


def handle_healthz(app: ApiApp, req: Request) -> Response:
    """200 when the database answers and the weights (and head-plane gate) files exist, else 503 saying which."""
    try:
        with get_engine(app.settings.database_url).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "unreachable"
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        database = "unreachable"
    model_file = "present" if app.weights_path.is_file() else "missing"
    gate = app.gate_path
    gate_file = "off" if gate is None else ("present" if gate.is_file() else "missing")
    ok = database == "ok" and model_file == "present" and gate_file != "missing"
    return json_response({"status": "ok" if ok else "unavailable", "database": database, "model_file": model_file,
                          "gate_file": gate_file, "model_loaded": app.model_loaded}, 200 if ok else 503)
