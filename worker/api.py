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

Example:
    >>> server = make_server(get_settings(), "127.0.0.1", 8080)   # doctest: +SKIP
    >>> server.serve_forever()                                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.exc import SQLAlchemyError

from db import (
    Job,
    JobStatus,
    Measurement,
    MeasurementStatus,
    create_job,
    get_engine,
    get_job,
    job_counts,
    query_measurements,
    row_dict,
    session_scope,
    upgrade,
)
from db.tables import MEASUREMENT_COLUMNS
from dicom_io import ScanIdentity, SpacingSource, stable_uid, write_us_image
from models.errors import WeightsError
from models.weights import SHIPPED_WEIGHTS, LoadedModel
from worker.pipeline import PipelineContext, WorkItem, load_context, measure_rows, store_rows
from worker.settings import Settings
from worker.webpage import PAGE_HEADERS, PAGE_HTML

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # an upload above this is answered 413 without being read
MAX_IMAGE_PIXELS = 4096 * 4096  # the DICOM reader's limit for one frame (dicom_io.reader.MAX_FRAME_PIXELS)
MIN_IMAGE_SIDE_PX = 32
READ_TIMEOUT_S = 60.0  # a client that stops sending for this long is dropped
LINGER_S = 2.0  # after refusing an unread body, how long to drain it before closing (see _linger)
RESULTS_LIMIT_DEFAULT = 500  # JSON rows when no limit is given (the CSV has none)
RESULTS_LIMIT_MAX = 10_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg"}
ORDERS = ("study_date", "newest")
# Spreadsheet programs run cells that start with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class ApiError(Exception):
    """An answer other than 200: HTTP status, a short machine-readable ``reason`` and the message."""

    def __init__(self, status: int, reason: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(status, reason, message, extra)
        self.status = status
        self.reason = reason
        self.message = message
        self.extra = extra or {}

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
    return Response(status, text.encode(), "application/json", dict(_API_HEADERS))


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


# -- the application state ---------------------------------------------------------------------------------------

class ApiApp:
    """What every request shares: settings, the token, the lazily loaded model and the measuring lock.

    The model is loaded on the first measurement (``load_context``, cached) and one forward pass
    runs at a time: on a CPU, parallel passes only slow each other down.
    """

    def __init__(self, settings: Settings, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.settings = settings
        self.token = settings.api_token
        self.max_body_bytes = max_body_bytes
        self.measure_lock = threading.Lock()
        self._context: PipelineContext | None = None
        self._context_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @property
    def weights_path(self) -> Path:
        """The weights file the model is (or will be) loaded from."""
        return Path(self.settings.weights) if self.settings.weights else SHIPPED_WEIGHTS

    @property
    def model_loaded(self) -> bool:
        return self._context is not None

    @property
    def model(self) -> LoadedModel | None:
        """The loaded model, None before the first measurement."""
        return self._context.model if self._context else None

    def context(self) -> PipelineContext:
        """The pipeline context, loading the model on first use (once per process)."""
        with self._context_lock:
            if self._context is None:
                if self.settings.torch_threads:
                    import torch

                    torch.set_num_threads(self.settings.torch_threads)
                started = time.perf_counter()
                try:
                    self._context = load_context(self.settings)
                except WeightsError as exc:
                    log.error("model cannot be loaded: %s", exc)
                    raise ApiError(503, "model_unavailable", f"the model cannot be loaded: {exc}") from None
                log.info("model %s loaded on %s in %.1f s", self._context.model.model_version[:12],
                         self._context.device, time.perf_counter() - started)
            return self._context

    def ensure_schema(self) -> None:
        """Create the tables on first database use (so the server starts while the database is down)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                try:
                    upgrade(self.settings.database_url)
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("database unavailable (%s)", type(exc).__name__)
                    raise ApiError(503, "database_unavailable",
                                   "the results database cannot be reached; try again later") from None
                self._schema_ready = True

    def authorised(self, headers: dict[str, str]) -> bool:
        """True without a token; else the request carries ``Authorization: Bearer <token>``."""
        if not self.token:
            return True
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())


# -- handlers ----------------------------------------------------------------------------------------------------

def handle_page(app: ApiApp, req: Request) -> Response:
    """The web page (no token needed: it holds no data; its requests send the token)."""
    return Response(200, PAGE_HTML.encode(), "text/html; charset=utf-8", dict(PAGE_HEADERS))


def handle_healthz(app: ApiApp, req: Request) -> Response:
    """200 when the database answers and the weights file exists, else 503 saying which failed."""
    try:
        with get_engine(app.settings.database_url).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "unreachable"
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        database = "unreachable"
    model_file = "present" if app.weights_path.is_file() else "missing"
    ok = database == "ok" and model_file == "present"
    return json_response({"status": "ok" if ok else "unavailable", "database": database, "model_file": model_file,
                          "model_loaded": app.model_loaded}, 200 if ok else 503)


@dataclass(frozen=True)
class ResultFilters:
    """The filters of /api/results: exact patient and study, status, study-date range (inclusive)."""

    patient_id: str | None = None
    study_uid: str | None = None
    status: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None


def _parse_date(name: str, text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name}={text!r} is not a date; write YYYY-MM-DD") from None


def parse_filters(query: dict[str, str]) -> ResultFilters:
    """The result filters of a query string (400 on a malformed value)."""
    status = query.get("status") or None
    choices = [s.value for s in MeasurementStatus]
    if status is not None and status not in choices:
        raise ApiError(400, "bad_parameter", f"status={status!r}; choose one of: {', '.join(choices)}")
    filters = ResultFilters(query.get("patient_id") or None, query.get("study_uid") or None, status,
                            _parse_date("since", query.get("since")), _parse_date("until", query.get("until")))
    if filters.since and filters.until and filters.since > filters.until:
        raise ApiError(400, "bad_parameter", f"since={filters.since} is after until={filters.until}")
    return filters


def parse_limit(query: dict[str, str], default: int | None) -> int | None:
    """``limit`` as 1..RESULTS_LIMIT_MAX (400 otherwise); ``default`` when absent."""
    text = query.get("limit")
    if not text:
        return default
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= RESULTS_LIMIT_MAX:
        raise ApiError(400, "bad_parameter", f"limit={text!r}; give a whole number from 1 to {RESULTS_LIMIT_MAX}")
    return limit


def _filtered(stmt: Select[tuple[Measurement]], f: ResultFilters) -> Select[tuple[Measurement]]:
    if f.patient_id:
        stmt = stmt.where(Measurement.patient_id == f.patient_id)
    if f.study_uid:
        stmt = stmt.where(Measurement.study_instance_uid == f.study_uid)
    if f.status:
        stmt = stmt.where(Measurement.status == f.status)
    if f.since:
        stmt = stmt.where(Measurement.study_date >= f.since)
    if f.until:
        stmt = stmt.where(Measurement.study_date <= f.until)
    return stmt


def fetch_rows(app: ApiApp, query: dict[str, str], default_limit: int | None) -> list[dict[str, Any]]:
    """Stored rows (as ``row_dict``) matching the query's filters, in the order it asks for."""
    filters, limit = parse_filters(query), parse_limit(query, default_limit)
    order = query.get("order") or "study_date"
    if order not in ORDERS:
        raise ApiError(400, "bad_parameter", f"order={order!r}; choose one of: {', '.join(ORDERS)}")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        if order == "study_date":
            rows = query_measurements(session, patient_id=filters.patient_id, study_uid=filters.study_uid,
                                      status=filters.status, since=filters.since, until=filters.until, limit=limit)
        else:  # newest: the last measured first (for the page's "latest results")
            stmt = _filtered(select(Measurement), filters).order_by(Measurement.updated_at.desc(),
                                                                     Measurement.id.desc())
            rows = list(session.scalars(stmt.limit(limit) if limit else stmt))
        return [row_dict(r) for r in rows]


def handle_results(app: ApiApp, req: Request) -> Response:
    """Stored measurements as a JSON list (at most ``limit``, RESULTS_LIMIT_DEFAULT by default)."""
    return json_response(fetch_rows(app, req.query, RESULTS_LIMIT_DEFAULT))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text, never run as a formula
    return value


def handle_results_csv(app: ApiApp, req: Request) -> Response:
    """Stored measurements as a CSV download: every column of the table, same filters as JSON."""
    rows = fetch_rows(app, req.query, None)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(MEASUREMENT_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return Response(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                    {**_API_HEADERS, "Content-Disposition": 'attachment; filename="fetalhc-results.csv"'})


def handle_job(app: ApiApp, req: Request) -> Response:
    """One job (a scan that arrived) and what became of it."""
    text = req.path.removeprefix("/api/jobs/")
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, "bad_parameter", f"job id {text[:40]!r} is not a number")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        job = get_job(session, int(text))
        if job is None:
            raise ApiError(404, "not_found", f"there is no job {text}")
        return json_response({c.name: getattr(job, c.name) for c in Job.__table__.columns})


def handle_stats(app: ApiApp, req: Request) -> Response:
    """Jobs and measurements counted by status, and the model this server measures with."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        jobs = job_counts(session)
        measurements = dict(session.execute(
            select(Measurement.status, func.count()).group_by(Measurement.status)).tuples().all())
    model = app.model
    return json_response({
        "jobs": {s.value: int(jobs.get(s.value, 0)) for s in JobStatus},
        "measurements": {s.value: int(measurements.get(s.value, 0)) for s in MeasurementStatus},
        "model": {"loaded": model is not None, "name": model.model_name if model else None,
                  "version": model.model_version if model else None},
    })


# -- measuring one upload ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Upload:
    """A request body to measure: ``kind`` (dicom | png | jpeg), its bytes, and what came with it."""

    kind: str
    data: bytes
    spacing_mm: float | None
    ga_days: float | None
    store: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _number(query: dict[str, str], name: str, low: float, high: float, what: str) -> float | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value < high):
        raise ApiError(422, "bad_parameter", f"{name}={text[:40]!r}: give {what} between {low:g} and {high:g}")
    return value


def _flag(query: dict[str, str], name: str) -> bool:
    text = (query.get(name) or "0").lower()
    if text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ApiError(422, "bad_parameter", f"{name}={text[:20]!r}; give 1 or 0")
    return text in ("1", "true", "yes", "on")


def parse_upload(req: Request) -> Upload:
    """What to measure: the kind from the bytes themselves (then the content type), checked parameters."""
    data = req.body
    if not data:
        raise ApiError(422, "empty_upload", "the request has no body: POST the file's bytes "
                                            "(Content-Type application/dicom, image/png or image/jpeg)")
    content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if data.startswith(PNG_MAGIC):
        kind = "png"
    elif data.startswith(JPEG_MAGIC):
        kind = "jpeg"
    elif content_type in IMAGE_TYPES:
        raise ApiError(422, "unreadable_image", f"the body is not a {IMAGE_TYPES[content_type].upper()} image")
    else:
        kind = "dicom"
    spacing = _number(req.query, "spacing_mm", 0.0, 10.0, "millimetres per pixel")
    if kind != "dicom" and spacing is None:
        raise ApiError(422, "uncalibrated",
                       f"a {kind.upper()} image carries no millimetre scale: add spacing_mm=<millimetres per pixel> "
                       "to the URL (e.g. ?spacing_mm=0.15); DICOM files carry their own calibration")
    ga_days = _number(req.query, "ga_days", 0.0, 320.0, "the gestational age in days")
    return Upload(kind, data, spacing, ga_days, _flag(req.query, "store"))


def image_to_grey(data: bytes, kind: str) -> np.ndarray:
    """A PNG or JPEG as 8-bit grey pixels (rows, cols); 422 when it cannot be decoded or is too large."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            cols, rows = im.size
            if cols * rows > MAX_IMAGE_PIXELS or min(cols, rows) < MIN_IMAGE_SIDE_PX:
                raise ApiError(422, "unsupported_image", f"a {cols}x{rows} image cannot be measured: "
                               f"sides of {MIN_IMAGE_SIDE_PX} pixels or more, at most {MAX_IMAGE_PIXELS} pixels")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: stretch to 8 bits
                values = np.asarray(im, dtype=np.float64)
                top = float(values.max()) or 1.0
                return np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(422, "unreadable_image",
                       f"the {kind.upper()} image cannot be decoded ({type(exc).__name__})") from None


def _write_dicom(upload: Upload, folder: Path) -> Path:
    """The upload as a DICOM file in ``folder``: as sent, or a PNG/JPEG wrapped with its given spacing.

    Wrapped images get UIDs derived from their bytes, so storing the same image twice keeps one row.
    """
    sha = upload.sha256
    path = folder / f"{sha[:40]}.dcm"
    if path.is_file():
        return path
    partial = folder / f".{sha[:40]}.{threading.get_ident()}.part"
    if upload.kind == "dicom":
        partial.write_bytes(upload.data)
    else:
        assert upload.spacing_mm is not None  # parse_upload refused an image without spacing
        identity = ScanIdentity(patient_id="", patient_name="", study_uid=stable_uid("fetalhc-api", sha, "study"),
                                series_uid=stable_uid("fetalhc-api", sha, "series"),
                                sop_uid=stable_uid("fetalhc-api", sha, "image"))
        write_us_image(partial, image_to_grey(upload.data, upload.kind), upload.spacing_mm, identity=identity,
                       regions=False, pixel_spacing=True)
    os.replace(partial, path)
    return path


def _overlay_data_url(item: WorkItem, row: dict[str, Any]) -> str | None:
    """The measured frame with the fitted ellipse (or the image alone when no head was measured)."""
    from models.evaluate import overlay_png

    if item.best is not None:
        scan, bio = item.best
        caption = (f"HC {bio.hc_mm:.1f} mm   BPD {bio.bpd_mm:.1f} mm   OFD {bio.ofd_mm:.1f} mm   "
                   f"quality {bio.quality:.2f}")
        image, ellipse = scan.pixels, bio.ellipse_px
    elif item.first_scan is not None:
        image, ellipse, caption = item.first_scan.pixels, None, f"not measured: {row.get('reason')}"
    else:
        return None
    buf = io.BytesIO()
    overlay_png(image, ellipse, None, buf, caption)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _split(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part]


def measure_body(row: dict[str, Any], item: WorkItem, upload: Upload, overlay: str | None) -> dict[str, Any]:
    """The JSON answer of /api/measure from the pipeline's row."""
    ellipse = None
    if item.best is not None:
        scan, bio = item.best
        px = bio.ellipse_px
        ellipse = {"center_x_mm": row["center_x_mm"], "center_y_mm": row["center_y_mm"],
                   "semi_axis_a_mm": row["semi_axis_a_mm"], "semi_axis_b_mm": row["semi_axis_b_mm"],
                   "angle_rad": row["angle_rad"],
                   "px": {"cx": px.cx, "cy": px.cy, "a": px.a, "b": px.b, "angle": px.angle},
                   "origin_xy": list(scan.origin_xy),
                   "frame": "mm and pixels from the top-left of the calibrated region (origin_xy in the full frame)"}
    region = [row.get(f"region_{k}") for k in ("x0", "y0", "x1", "y1")]
    return {
        "status": row["status"], "reason": row.get("reason"), "message": row.get("detail"),
        "hc_mm": row.get("hc_mm"), "bpd_mm": row.get("bpd_mm"), "ofd_mm": row.get("ofd_mm"),
        "quality": row.get("quality"), "flags": _split(row.get("flags")),
        "hc_tta_spread_mm": row.get("hc_tta_spread_mm"),
        "ellipse": ellipse,
        "spacing": {"x_mm": row.get("spacing_mm_x"), "y_mm": row.get("spacing_mm_y"),
                    "source": row.get("spacing_source"), "region": region if region[0] is not None else None},
        "ga": {"days": row.get("ga_days"), "source": row.get("ga_source"), "estimate_days": row.get("ga_estimate_days"),
               "formula": row.get("ga_formula"), "hc_z_score": row.get("hc_z_score"),
               "hc_centile": row.get("hc_centile"), "standard": row.get("growth_standard"),
               "flags": _split(row.get("growth_flags")), "centile_reason": row.get("centile_reason")},
        "scan": {"sop_instance_uid": row.get("sop_instance_uid"), "study_instance_uid": row.get("study_instance_uid"),
                 "frame": row.get("frame"), "patient_id": row.get("patient_id") or None,
                 "study_date": row.get("study_date")},
        "input": {"kind": upload.kind, "bytes": len(upload.data), "sha256": upload.sha256},
        "model": {"name": row.get("model_name"), "version": row.get("model_version")},
        "timing_ms": {"read": row.get("read_ms"), "infer": row.get("infer_ms"), "total": row.get("total_ms")},
        "stored": upload.store, "job_id": item.job_id,
        "overlay_png": overlay,
    }


def handle_measure(app: ApiApp, req: Request) -> Response:
    """Measure the uploaded scan with the loaded model; store it only with ``store=1``."""
    upload = parse_upload(req)
    ctx = app.context()
    with tempfile.TemporaryDirectory(prefix="fetalhc-api-") as tmp:
        folder = Path(tmp)  # measured, then forgotten
        if upload.store:  # kept in the spool, where the job row points
            app.ensure_schema()
            folder = app.settings.spool_dir / "api"
            folder.mkdir(parents=True, exist_ok=True)
        path = _write_dicom(upload, folder)
        job_id = None
        if upload.store:
            with session_scope(app.settings.database_url) as session:
                job_id = create_job(session, str(path), "api", ga_days_given=upload.ga_days)
        item = WorkItem(path, job_id, upload.ga_days)
        with app.measure_lock:  # one forward pass (and one matplotlib figure) at a time
            row = measure_rows(ctx, [item])[0]
            overlay = _overlay_data_url(item, row)
        if row.get("detail"):  # the reader names the file; the caller knows it as their upload
            row["detail"] = str(row["detail"]).replace(path.name, "the upload")
        if upload.kind != "dicom" and row.get("spacing_source"):
            row["spacing_source"] = SpacingSource.GIVEN.value  # the caller's spacing_mm, not the file's
        if upload.store:
            store_rows(app.settings.database_url, [item], [row])
    log.info("api measure kind=%s status=%s reason=%s stored=%s ms=%s", upload.kind, row["status"],
             row.get("reason"), upload.store, row.get("total_ms"))
    return json_response(measure_body(row, item, upload, overlay), 422 if row["status"] == "failed" else 200)


# -- routing and the HTTP server -------------------------------------------------------------------------------

Handler = Callable[[ApiApp, Request], Response]


@dataclass(frozen=True)
class Route:
    """A handler and whether it needs the token (when one is configured)."""

    handler: Handler
    private: bool = True


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route(handle_page, private=False),
    ("GET", "/index.html"): Route(handle_page, private=False),
    ("GET", "/healthz"): Route(handle_healthz, private=False),
    ("GET", "/api/results"): Route(handle_results),
    ("GET", "/api/results.csv"): Route(handle_results_csv),
    ("GET", "/api/stats"): Route(handle_stats),
    ("POST", "/api/measure"): Route(handle_measure),
}
PREFIX_ROUTES: dict[tuple[str, str], Route] = {("GET", "/api/jobs/"): Route(handle_job)}


def find_route(method: str, path: str) -> Route:
    """The route of (method, path); ApiError 404 (unknown path) or 405 (known path, other method)."""
    route = ROUTES.get((method, path))
    if route is None:
        route = next((r for (m, prefix), r in PREFIX_ROUTES.items() if m == method and path.startswith(prefix)), None)
    if route is not None:
        return route
    known = [m for (m, p) in ROUTES if p == path] + [m for (m, p) in PREFIX_ROUTES if path.startswith(p)]
    if known:
        raise ApiError(405, "method_not_allowed", f"{path} answers {', '.join(sorted(set(known)))}",
                       {"allow": sorted(set(known))})
    raise ApiError(404, "not_found", f"there is nothing at {path[:200]}")


class RequestHandler(BaseHTTPRequestHandler):
    """Parses, authorises and reads one request, then dispatches it; logs without query strings."""

    server: ApiServer
    server_version = "fetalhc"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    @property
    def _path_only(self) -> str:
        return urlsplit(getattr(self, "path", "") or "").path or "-"

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        started = time.perf_counter()
        self._body_read = False
        try:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            route = find_route(method, url.path)
            if route.private and not app.authorised(headers):
                raise ApiError(401, "unauthorized", "send the API token: Authorization: Bearer <FETALHC_API_TOKEN>")
            body = self._read_body(app) if method in ("POST", "PUT") else b""
            response = route.handler(app, Request(method, url.path, query, headers, body))
        except ApiError as exc:
            response = json_response(exc.body(), exc.status)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="fetalhc"'
            if exc.status == 405:
                response.headers["Allow"] = ", ".join(exc.extra.get("allow", []))
        except SQLAlchemyError as exc:
            log.warning("%s %s: database error (%s)", method, self._path_only, type(exc).__name__)
            response = json_response({"status": "failed", "reason": "database_unavailable",
                                      "message": "the results database cannot be reached; try again later"}, 503)
        except Exception:  # noqa: BLE001 - no request may end the server
            log.exception("%s %s: unexpected error", method, self._path_only)
            response = json_response({"status": "failed", "reason": "internal_error",
                                      "message": "unexpected server error (see the server log)"}, 500)
        self._send(response, started)

    def _read_body(self, app: ApiApp) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "length_required", "send the body with a Content-Length (no chunked encoding)")
        text = self.headers.get("Content-Length")
        if text is None:
            raise ApiError(411, "length_required", "send the body with a Content-Length header")
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a byte count") from None
        if length > app.max_body_bytes:
            raise ApiError(413, "too_large", f"the body is {length} bytes; the limit is {app.max_body_bytes} "
                                             f"({app.max_body_bytes // (1024 * 1024)} MB)")
        data = self.rfile.read(length)
        self._body_read = True
        if len(data) != length:
            self.close_connection = True
            raise ApiError(400, "incomplete_body", f"the body ended after {len(data)} of {length} bytes")
        return data

    def _body_unread(self) -> bool:
        """A body was announced but not read (refused before reading): it must not be parsed as a request."""
        if self._body_read:
            return False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return True
        text = self.headers.get("Content-Length", "0").strip()
        return not text.isdigit() or int(text) > 0

    def _send(self, response: Response, started: float) -> None:
        unread = self._body_unread()
        if unread:
            self.close_connection = True  # this connection cannot carry another request
        self._elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
            if unread:
                self._linger()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; nothing to answer

    def _linger(self) -> None:
        """Stop sending, then read and drop what the client still sends (for up to LINGER_S).

        Closing a socket with unread data resets the connection, and a reset can destroy the
        answer before the client reads it; a client that sends its whole body first (browsers,
        urllib) would see a reset instead of the 413.
        """
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + LINGER_S
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    # http.server logs the request line, query string included; log method, path and status only.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        elapsed = getattr(self, "_elapsed_ms", None)
        log.info("%s %s %s%s", getattr(self, "command", "-") or "-", self._path_only,
                 code.value if isinstance(code, HTTPStatus) else code,
                 f" {elapsed:.0f}ms" if elapsed is not None else "")

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # Its messages quote the raw request line (query included): log only what is safe.
        log.warning("%s %s: malformed or refused request", getattr(self, "command", "-") or "-", self._path_only)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", getattr(self, "command", "-") or "-", self._path_only)


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server (a thread per connection) holding the shared ``ApiApp``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: ApiApp) -> None:
        self.app = app
        super().__init__(address, RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
                max_body_bytes: int = MAX_BODY_BYTES) -> ApiServer:
    """Bind the API on (host, port) (port 0: any free port); call ``serve_forever()`` to run it.

    Warns when it listens beyond this machine without ``FETALHC_API_TOKEN``: results hold patient IDs.
    """
    app = ApiApp(settings, max_body_bytes)
    if not settings.api_token and not is_loopback(host):
        log.warning("serving on %s without FETALHC_API_TOKEN: anyone who reaches this port can read results "
                    "and patient IDs; set FETALHC_API_TOKEN or bind to 127.0.0.1", host)
    try:
        app.ensure_schema()
    except ApiError:  # start anyway (logged): /healthz says 503 until the database answers
        pass
    return ApiServer((host, port), app)
