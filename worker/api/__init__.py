"""The HTTP API and web page (``fetalhc serve``): results, stats, jobs, and measuring one uploaded scan.

FastAPI on uvicorn. Endpoints (JSON unless said otherwise; schema at ``/openapi.json``, docs at ``/docs``):

- ``GET /`` the web page; ``GET /healthz`` database reachable and model file present (200 or 503).
- ``GET /api/results`` and ``GET /api/results.csv``: stored rows; filters ``patient_id``,
  ``study_uid``, ``status``, ``since``/``until`` (study date, YYYY-MM-DD), ``limit``, and ``order``
  (``study_date``: oldest study first, as ``fetalhc results``; ``newest``: last measured first).
- ``GET /api/jobs/<id>``, ``GET /api/stats`` (jobs and measurements counted by status).
- ``POST /api/measure``: the body is one DICOM file, or a PNG/JPEG with ``?spacing_mm=`` (mm per
  pixel); optional ``ga_days`` (GA at the scan, for the centile) and ``store=1`` (record a job and
  the row, as ``fetalhc process`` does; by default nothing is stored). 200 for a measured head,
  422 with ``reason`` and ``message`` when the input cannot be measured, 413 above 64 MB.

When ``FETALHC_API_TOKEN`` is set, every ``/api/`` endpoint needs ``Authorization: Bearer <token>``.
Without one, only requests to this server's own name or address answer (``guards``: DNS
rebinding), and nowhere do writes from a foreign ``Origin`` or with a form's content type.
Log lines carry the method, the path without its query string and the status.

Modules: ``app`` (the shared ``ApiApp``: settings, model, lock), ``routes`` (the FastAPI app),
``guards`` (Host/Origin checks, logs), ``schemas`` (answers as pydantic models), ``messages``
(ApiError, JSON encoding), ``pages`` (health), ``results``, ``uploads`` and ``measure``, ``server``
(uvicorn and ``make_server``).

Example:
    >>> server = make_server(get_settings(), "127.0.0.1", 8080)   # doctest: +SKIP
    >>> server.serve_forever()                                      # doctest: +SKIP
"""

from __future__ import annotations

from worker.api.app import MAX_BODY_BYTES, ApiApp
from worker.api.guards import LINGER_S, Guard, is_loopback
from worker.api.messages import API_HEADERS, ApiError, Request, json_response
from worker.api.routes import REQUEST_DEADLINE_S, create_app
from worker.api.server import READ_TIMEOUT_S, ApiServer, make_server

__all__ = [
    "API_HEADERS", "LINGER_S", "MAX_BODY_BYTES", "READ_TIMEOUT_S", "REQUEST_DEADLINE_S", "ApiApp", "ApiError",
    "ApiServer", "Guard", "Request", "create_app", "is_loopback", "json_response", "make_server",
]
