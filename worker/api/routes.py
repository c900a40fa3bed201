"""The FastAPI application: one small function per endpoint, the token as a dependency, errors as JSON.

``create_app(api)`` builds it around an ``ApiApp`` (settings, model, lock); ``server.make_server``
serves it with uvicorn. OpenAPI schema at ``/openapi.json``, docs at ``/docs`` (no token needed:
they hold no data; the docs page loads its script from a CDN, so it shows only where that is reachable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query
from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from worker.api.app import ApiApp
from worker.api.auth import Caller, authenticate, require_reviewer
from worker.api.images import WIDTH_RANGE
from worker.api.guards import Guard, own_names
from worker.api.measure import measure_upload
from worker.api.messages import API_HEADERS, ApiError, Request, json_response
from worker.api.page import PAGE_HEADERS, PAGE_HTML
from worker.api.pages import health
from worker.api.results import (
    RESULTS_LIMIT_DEFAULT,
    fetch_job,
    fetch_rows,
    fetch_stats,
    results_csv,
)
from worker.api.review import (
    REVIEW_BODY_MAX,
    ReviewIn,
    fetch_measurement,
    fetch_worklist,
    growth_curves,
    measurement_id,
    measurement_image,
    parse_review,
    submit_review,
)
from worker.api.schemas import (
    CurvesOut,
    ErrorOut,
    HealthOut,
    JobOut,
    MeasurementOut,
    MeasurementReviewsOut,
    MeasureOut,
    ReviewedOut,
    StatsOut,
    WhoAmIOut,
)
from worker.api.uploads import parse_upload

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)

REQUEST_DEADLINE_S = 120.0  # an upload must arrive, and its turn to be measured come, within this
FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")  # what a form can send
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 413, 415, 422, 503)}


def api_of(request: HttpRequest) -> ApiApp:
    """The shared ``ApiApp`` (a dependency)."""
    return request.app.state.api


def require_token(api: Annotated[ApiApp, Depends(api_of)],
                  authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Caller:
    """With ``FETALHC_API_TOKEN`` or ``FETALHC_API_TOKENS_FILE`` set: ``Authorization: Bearer <token>``, else 401."""
    return authenticate(api, authorization)


def no_form_content(content_type: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """Refuse the content types an HTML form can send cross-site without asking (415)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in FORM_TYPES:
        raise ApiError(415, "unsupported_media_type", f"Content-Type {kind} is not taken here: send the file's "
                       "bytes as application/dicom, image/png or image/jpeg")


async def read_body(request: HttpRequest, api: ApiApp, deadline: float) -> bytes:
    """The whole body, bounded: a Content-Length (411 without), at most ``max_body_bytes`` (413), in time (408)."""
    headers = request.headers
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ApiError(411, "length_required", "send the body with a Content-Length (no chunked encoding)")
    text = headers.get("content-length")
    if text is None:
        raise ApiError(411, "length_required", "send the body with a Content-Length header")
    if not text.strip().isdigit():
        raise ApiError(400, "bad_request", "Content-Length is not a byte count")
    length = int(text)
    if length > api.max_body_bytes:
        raise ApiError(413, "too_large", f"the body is {length} bytes; the limit is {api.max_body_bytes} "
                                         f"({api.max_body_bytes // (1024 * 1024)} MB)")
    chunks: list[bytes] = []

    async def read() -> None:
        async for chunk in request.stream():
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise ApiError(408, "request_timeout", f"the body did not arrive within {REQUEST_DEADLINE_S:g} s") from None
    return b"".join(chunks)


def _first_values(request: HttpRequest) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name, value)
    return query


def create_app(api: ApiApp, bind_host: str = "127.0.0.1") -> Guard:
    """The API and page around ``api``; without a token, only Host names of ``bind_host``/this machine answer."""
    app = FastAPI(title="fetalhc", version="0.1.0", summary="Fetal head circumference from ultrasound DICOMs",
                  redoc_url=None)
    app.state.api = api
    private = [Depends(require_token)]

    @app.get("/", include_in_schema=False)
    @app.get("/index.html", include_in_schema=False)
    def page() -> Response:
        """The web page (no token needed: it holds no data; its requests send the token)."""
        return Response(PAGE_HTML.encode(), 200, dict(PAGE_HEADERS), media_type="text/html; charset=utf-8")

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def healthz() -> Response:
        """200 when the database answers and the model and head-plane gate files exist, else 503 (no token)."""
        body, status = health(api)
        return json_response(HealthOut(**body), status)

    @app.get("/api/results", response_model=list[MeasurementOut], dependencies=private, responses=ERRORS)
    def results(request: HttpRequest, patient_id: str | None = None, study_uid: str | None = None,
                status: Annotated[str | None, Query(description="measured | needs_review | failed | not_head")] = None,
                since: Annotated[str | None, Query(description="study date from, YYYY-MM-DD")] = None,
                until: Annotated[str | None, Query(description="study date to, YYYY-MM-DD")] = None,
                limit: Annotated[str | None, Query(description=f"1..10000 [{RESULTS_LIMIT_DEFAULT}]")] = None,
                order: Annotated[str | None, Query(description="study_date | newest")] = None,
                plane: Annotated[str | None, Query(description="a standard plane (SonoNet-16's class), e.g. "
                                                               "abdominal: rows of every status")] = None) -> Response:
        """Stored measurements (``not_head`` rows only with ``status=not_head`` or ``plane``), oldest study first."""
        rows = fetch_rows(api, _first_values(request), RESULTS_LIMIT_DEFAULT)
        return json_response([MeasurementOut(**row) for row in rows])

    @app.get("/api/results.csv", dependencies=private, responses={200: {"content": {"text/csv": {}}}, **ERRORS})
    def results_as_csv(request: HttpRequest, patient_id: str | None = None, study_uid: str | None = None,
                       status: str | None = None, since: str | None = None, until: str | None = None,
                       limit: str | None = None, order: str | None = None, plane: str | None = None) -> Response:
        """The same rows as a CSV download, every column, no row limit by default."""
        data = results_csv(fetch_rows(api, _first_values(request), None))
        return Response(data, 200, {**API_HEADERS, "Content-Disposition": 'attachment; filename="fetalhc-results.csv"'},
                        media_type="text/csv; charset=utf-8")

    @app.get("/api/jobs/{job_id}", response_model=JobOut, dependencies=private, responses={404: {"model": ErrorOut},
                                                                                         **ERRORS})
    def job(job_id: str) -> Response:
        """One job: a scan that arrived, from where, and what became of it."""
        return json_response(JobOut(**fetch_job(api, job_id)))

    @app.get("/api/stats", response_model=StatsOut, dependencies=private, responses=ERRORS)
    def stats() -> Response:
        """Jobs and measurements counted by status, and the model measuring here."""
        return json_response(StatsOut(**fetch_stats(api)))

    @app.post("/api/measure", response_model=MeasureOut, dependencies=[*private, Depends(no_form_content)],
              responses={422: {"model": MeasureOut}, **ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/dicom": {}, "image/png": {}, "image/jpeg": {}}}})
    async def measure(request: HttpRequest,
                      spacing_mm: Annotated[str | None, Query(description="mm per pixel, for PNG/JPEG")] = None,
                      ga_days: Annotated[str | None, Query(description="GA at the scan, days")] = None,
                      store: Annotated[str | None, Query(description="1: record a job and the row")] = None,
                      ) -> Response:
        """Measure one uploaded scan (the body: a DICOM file, or a PNG/JPEG with ``spacing_mm``)."""
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        body = await read_body(request, api, deadline)
        headers = {k.lower(): v for k, v in request.headers.items()}
        upload = parse_upload(Request("POST", request.url.path, _first_values(request), headers, body))
        answer, status = await run_in_threadpool(measure_upload, api, upload, deadline)
        return json_response(MeasureOut(**answer), status)

    @app.get("/api/whoami", response_model=WhoAmIOut, responses=ERRORS)
    def whoami(caller: Annotated[Caller, Depends(require_token)]) -> Response:
        """Who the token names (a reviewer), and whether it may review (only a named token may)."""
        return json_response(WhoAmIOut(name=caller.name, can_review=caller.name is not None,
                                        token_required=api.auth_required))

    @app.get("/api/review", response_model=list[MeasurementOut], dependencies=private, responses=ERRORS)
    def worklist(request: HttpRequest,
                 status: Annotated[str | None, Query(description="needs_review | not_head | measured")] = None,
                 reason: Annotated[str | None, Query(description="a reason or flag, e.g. low_confidence")] = None,
                 include_reviewed: Annotated[str | None, Query(description="1: rows already decided too")] = None,
                 limit: Annotated[str | None, Query(description="1..1000 [100]")] = None) -> Response:
        """Rows for a person to review (nobody has yet), oldest first."""
        return json_response([MeasurementOut(**row) for row in fetch_worklist(api, _first_values(request))])

    @app.get("/api/measurements/{ident}", response_model=MeasurementReviewsOut, dependencies=private,
             responses={404: {"model": ErrorOut}, **ERRORS})
    def measurement(ident: str) -> Response:
        """One stored row (effective values included) and every decision about it."""
        return json_response(MeasurementReviewsOut(**fetch_measurement(api, measurement_id(ident))))

    @app.post("/api/measurements/{ident}/review", response_model=ReviewedOut,
              responses={404: {"model": ErrorOut}, **ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ReviewIn.model_json_schema()}}}})
    async def review(request: HttpRequest, ident: str, caller: Annotated[Caller, Depends(require_token)]) -> Response:
        """A named reviewer's decision: accepted, rejected_not_head, rejected_unusable or corrected (an ellipse
        in mm or hc_mm alone); 403 without a named token, 404 for no such row, 422 for insane values."""
        reviewer = require_reviewer(caller)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the decision as Content-Type: application/json")
        length = request.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > REVIEW_BODY_MAX:
            raise ApiError(413, "too_large", f"a decision is at most {REVIEW_BODY_MAX} bytes")
        ident_n = measurement_id(ident)
        body = await read_body(request, api, time.monotonic() + REQUEST_DEADLINE_S)
        decision = parse_review(body)
        answer = await run_in_threadpool(submit_review, api, ident_n, reviewer, decision)
        return json_response(ReviewedOut(**answer))

    @app.get("/api/measurements/{ident}/image.png", dependencies=private,
             responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}, 410: {"model": ErrorOut},
                        **ERRORS})
    async def image(ident: str, overlay: Annotated[str | None, Query(description="0: the frame alone")] = None,
                    width: Annotated[str | None, Query(description="scale down to this many pixels wide")] = None
                    ) -> Response:
        """The stored scan's measured frame with the ellipse, axes and plane label (PNG; never cached)."""
        ident_n = measurement_id(ident)
        size = None
        if width:
            if not width.isdigit() or not WIDTH_RANGE[0] <= int(width) <= WIDTH_RANGE[1]:
                raise ApiError(400, "bad_parameter", f"width={width[:20]!r}; {WIDTH_RANGE[0]} to {WIDTH_RANGE[1]}")
            size = int(width)
        data = await run_in_threadpool(measurement_image, api, ident_n, overlay != "0", size)
        return Response(data, 200, dict(API_HEADERS), media_type="image/png")

    @app.get("/api/growth-curves", response_model=CurvesOut, dependencies=private, responses=ERRORS)
    def curves(standard: Annotated[str | None, Query(description="intergrowth | who")] = None) -> Response:
        """HC centile curves of a growth standard (the patient view's chart)."""
        return json_response(CurvesOut(**growth_curves(standard or api.settings.growth_standard.value)))

    @app.exception_handler(ApiError)
    async def api_error(request: HttpRequest, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="fetalhc"'} if exc.status == 401 else None
        return json_response(exc.body(), exc.status, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: HttpRequest, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            allow = sorted({m.strip() for m in (exc.headers or {}).get("Allow", "").split(",")} - {"HEAD", ""})
            return json_response({"status": "failed", "reason": "method_not_allowed",
                                  "message": f"{request.url.path} answers {', '.join(allow)}"}, 405,
                                 {"Allow": ", ".join(allow)})
        if exc.status_code == 404:
            return json_response({"status": "failed", "reason": "not_found",
                                  "message": f"there is nothing at {request.url.path[:200]}"}, 404)
        return json_response({"status": "failed", "reason": "bad_request", "message": str(exc.detail)},
                             exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HttpRequest, exc: RequestValidationError) -> Response:
        return json_response({"status": "failed", "reason": "bad_parameter", "message": "malformed request"}, 400)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: HttpRequest, exc: SQLAlchemyError) -> Response:
        log.warning("%s %s: database error (%s)", request.method, request.url.path, type(exc).__name__)
        return json_response({"status": "failed", "reason": "database_unavailable",
                              "message": "the results database cannot be reached; try again later"}, 503)

    @app.exception_handler(Exception)
    async def unexpected(request: HttpRequest, exc: Exception) -> Response:  # no request may end the server
        log.error("%s %s: unexpected error (%s)", request.method, request.url.path, type(exc).__name__,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return json_response({"status": "failed", "reason": "internal_error",
                              "message": "unexpected server error (see the server log)"}, 500)

    return Guard(app, token_set=api.auth_required, names=own_names(bind_host))
