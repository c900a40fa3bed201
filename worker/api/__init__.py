"""The HTTP API and web page (``fetalhc serve``): results, stats, jobs, and measuring one uploaded scan.

Standard library only: a ``ThreadingHTTPServer`` whose handler parses the request, checks the
token, reads a bounded body and hands a ``Request`` to a small handler function chosen from
``ROUTES``; each handler returns a ``Response`` or raises ``ApiError`` (a JSON error with a
``reason`` code and a message). Nothing a client sends can end the server: unexpected errors
become a 500 answer and a log line.

Endpoints (all JSON unless said otherwise):

- ``GET /`` the web page; ``GET /healthz`` database reachable and model file present (200 or 503).
- ``GET /api/results`` and ``GET /api/results.csv``: stored rows; filters ``patient_id``,
  ``study_uid``, ``status``, ``since``/``until`` (study date, YYYY-MM-DD), ``limit``, and ``order``
  (``study_date``: oldest study first, as ``fetalhc results``; ``newest``: last measured first).
- ``GET /api/jobs/<id>``, ``GET /api/stats`` (jobs and measurements counted by status).
- ``POST /api/measure``: the body is one DICOM file, or a PNG/JPEG with ``?spacing_mm=`` (mm per
  pixel); optional ``ga_days`` (GA at the scan, for the centile) and ``store=1`` (record a job and
  the row, as ``fetalhc process`` does; by default nothing is stored). 200 for a measured head,
  422 with ``reason`` and ``message`` when the input cannot be measured.

When ``FETALHC_API_TOKEN`` is set, every ``/api/`` endpoint needs ``Authorization: Bearer <token>``.
Log lines carry the method, the path without its query string and the status: query values
(``patient_id=...``) never reach a log.

Modules: ``messages`` (Request, Response, ApiError), ``app`` (the shared ``ApiApp``), ``pages``
(web page, health), ``results`` (results, CSV, jobs, stats), ``uploads`` and ``measure`` (measuring
one upload), ``routes`` (the routing table), ``server`` (the HTTP server and ``make_server``).

Example:
    >>> server = make_server(get_settings(), "127.0.0.1", 8080)   # doctest: +SKIP
    >>> server.serve_forever()                                      # doctest: +SKIP
"""

from __future__ import annotations

from worker.api.app import MAX_BODY_BYTES, ApiApp
from worker.api.measure import handle_measure, measure_body
from worker.api.messages import API_HEADERS, ApiError, Request, Response, json_response
from worker.api.pages import handle_healthz, handle_page
from worker.api.results import (
    ORDERS,
    RESULTS_LIMIT_DEFAULT,
    RESULTS_LIMIT_MAX,
    ResultFilters,
    fetch_rows,
    handle_job,
    handle_results,
    handle_results_csv,
    handle_stats,
    parse_filters,
    parse_limit,
)
from worker.api.routes import PREFIX_ROUTES, ROUTES, Handler, Route, find_route
from worker.api.server import LINGER_S, READ_TIMEOUT_S, ApiServer, RequestHandler, is_loopback, make_server
from worker.api.uploads import (
    IMAGE_TYPES,
    JPEG_MAGIC,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE_PX,
    PNG_MAGIC,
    Upload,
    image_to_grey,
    parse_upload,
    write_dicom,
)

__all__ = [
    "API_HEADERS", "IMAGE_TYPES", "JPEG_MAGIC", "LINGER_S", "MAX_BODY_BYTES", "MAX_IMAGE_PIXELS", "MIN_IMAGE_SIDE_PX",
    "ORDERS", "PNG_MAGIC", "PREFIX_ROUTES", "READ_TIMEOUT_S", "RESULTS_LIMIT_DEFAULT", "RESULTS_LIMIT_MAX", "ROUTES",
    "ApiApp", "ApiError", "ApiServer", "Handler", "Request", "RequestHandler", "Response", "ResultFilters", "Route",
    "Upload", "fetch_rows", "find_route", "handle_healthz", "handle_job", "handle_measure", "handle_page",
    "handle_results", "handle_results_csv", "handle_stats", "image_to_grey", "is_loopback", "json_response",
    "make_server", "measure_body", "parse_filters", "parse_limit", "parse_upload", "write_dicom",
]
