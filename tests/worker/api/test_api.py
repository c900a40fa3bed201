"""``fetalhc serve``: the real server on a free localhost port, spoken to with urllib (SQLite; one PostgreSQL test)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import http.client
import io
import json
import logging
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from db import dispose_all, session_scope, upgrade, upsert_measurement
from dicom_io.phantom import Phantom, make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from worker.api import make_server
from worker.core.settings import get_settings

# No proxy for localhost, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextmanager
def running(**kwargs: Any) -> Iterator[str]:
    """A server for the current settings on a free port, in a thread; yields its base URL."""
    get_settings.cache_clear()
    server = make_server(get_settings(), "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture()
def api(fetalhc_env: pytest.MonkeyPatch) -> Iterator[str]:
    with running() as url:
        yield url


def call(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; error statuses are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def call_json(url: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, response_headers, data = call(url, method, body, headers)
    assert response_headers["Content-Type"].startswith("application/json"), data[:200]
    return status, json.loads(data)


def post(url: str, body: bytes, content_type: str = "application/dicom", **headers: str) -> tuple[int, Any]:
    return call_json(url, "POST", body, {"Content-Type": content_type, **headers})


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(hc_mm=180.0, spacing_mm=0.15)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def assert_png_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    data = base64.b64decode(url[len(prefix):], validate=True)
    assert data.startswith(PNG_MAGIC)
    Image.open(io.BytesIO(data)).verify()
    return Image.open(io.BytesIO(data))


def stored_row(**values: Any) -> dict[str, Any]:
    """A measurement row as the pipeline would store it (without measuring anything)."""
    uid = values.pop("sop_instance_uid", "1.2.3." + hashlib.sha1(repr(values).encode()).hexdigest()[:12])
    return {"sop_instance_uid": uid, "frame": 1, "model_version": "v" * 64, "model_name": "test",
            "status": "measured", **values}


# -- health -------------------------------------------------------------------------------------------------------

def test_healthz_reports_database_and_model_file(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with running() as url:
        status, body = call_json(url + "/healthz")
    assert status == 200
    gate_file = "off" if get_settings().head_plane_gate == "off" else "present"
    assert body == {"status": "ok", "database": "ok", "model_file": "present", "gate_file": gate_file,
                    "plane_classifier": "off", "model_loaded": False}

    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "on")
    fetalhc_env.setattr("models.plane.head_plane.SHIPPED_GATE", tmp_path / "no_gate.pt")
    with running() as url:
        status, body = call_json(url + "/healthz")
    assert (status, body["gate_file"], body["model_file"]) == (503, "missing", "present")
    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "off")
    with running() as url:
        assert call_json(url + "/healthz")[1]["gate_file"] == "off"

    fetalhc_env.setenv("FETALHC_WEIGHTS", str(tmp_path / "missing.pt"))
    with running() as url:
        status, body = call_json(url + "/healthz")
    assert (status, body["model_file"], body["database"]) == (503, "missing", "ok")

    fetalhc_env.delenv("FETALHC_WEIGHTS")
    (tmp_path / "a_file").write_text("not a folder")
    fetalhc_env.setenv("FETALHC_DATABASE_URL", f"sqlite:///{tmp_path / 'a_file' / 'x.db'}")
    with running() as url:  # starts although the database cannot be opened
        status, body = call_json(url + "/healthz")
        results_status, results = call_json(url + "/api/results")
    assert (status, body["database"], body["model_file"]) == (503, "unreachable", "present")
    assert (results_status, results["reason"]) == (503, "database_unavailable")


# -- measuring ----------------------------------------------------------------------------------------------------

def test_measure_png_with_spacing_answers_hc_and_overlay_and_stores_nothing(api: str, phantom: Phantom) -> None:
    status, body = post(api + "/api/measure?spacing_mm=0.15", png_bytes(phantom.image), "image/png")

    assert status == 200, body
    assert body["status"] in ("measured", "needs_review")
    assert body["hc_mm"] == pytest.approx(phantom.hc_mm, rel=0.08)
    assert body["bpd_mm"] < body["ofd_mm"]
    assert body["spacing"] == {"x_mm": 0.15, "y_mm": 0.15, "source": "given", "region": None}
    assert body["ellipse"]["semi_axis_a_mm"] == pytest.approx(body["ofd_mm"] / 2, rel=1e-3)
    assert body["input"]["kind"] == "png"
    assert len(body["model"]["version"]) == 64
    assert body["ga"]["source"] == "none" and body["ga"]["hc_centile"] is None
    assert body["ga"]["estimate_days"] is not None
    overlay = assert_png_data_url(body["overlay_png"])
    assert overlay.size[0] >= 400
    # Not stored: no job, no row.
    assert (body["stored"], body["job_id"]) == (False, None)
    assert call_json(api + "/api/results")[1] == []
    stats = call_json(api + "/api/stats")[1]
    assert sum(stats["jobs"].values()) == sum(stats["measurements"].values()) == 0
    assert stats["model"]["loaded"] is True


def test_measure_dicom_with_store_then_results_filters_csv_jobs_and_stats(api: str, phantom: Phantom,
                                                                           tmp_path: Path) -> None:
    ident = ScanIdentity(patient_id="P-API-1", study_date=dt.date(2026, 5, 1), last_menstrual_date=dt.date(2025, 12, 1))
    path = write_us_image(tmp_path / "scan.dcm", phantom.image, phantom.spacing_mm, identity=ident)
    with session_scope(get_settings().database_url) as session:  # stored earlier (the server made the tables)
        upsert_measurement(session, stored_row(patient_id="P-OTHER", study_date=dt.date(2024, 1, 10),
                                               status="failed", reason="uncalibrated", detail="=cmd|' /C calc'!A0"))

    status, body = post(api + "/api/measure?store=1", path.read_bytes())

    assert status == 200, body
    assert body["hc_mm"] == pytest.approx(phantom.hc_mm, rel=0.08)
    assert (body["spacing"]["x_mm"], body["spacing"]["source"]) == (0.15, "us_region")
    assert (body["ga"]["days"], body["ga"]["source"]) == (151.0, "lmp")  # LMP to study date
    assert 0 <= body["ga"]["hc_centile"] <= 100
    assert body["scan"]["patient_id"] == "P-API-1"
    assert_png_data_url(body["overlay_png"])
    assert body["stored"] is True and isinstance(body["job_id"], int)

    rows = call_json(api + "/api/results?patient_id=P-API-1")[1]
    assert len(rows) == 1
    assert (rows[0]["hc_mm"], rows[0]["study_date"], rows[0]["job_id"]) == (body["hc_mm"], "2026-05-01",
                                                                            body["job_id"])
    assert [r["patient_id"] for r in call_json(api + "/api/results?status=failed")[1]] == ["P-OTHER"]
    assert [r["patient_id"] for r in call_json(api + "/api/results?since=2026-01-01")[1]] == ["P-API-1"]
    assert [r["patient_id"] for r in call_json(api + "/api/results?until=2025-12-31")[1]] == ["P-OTHER"]
    assert [r["patient_id"] for r in call_json(api + "/api/results")[1]] == ["P-OTHER", "P-API-1"]  # oldest first
    assert [r["patient_id"] for r in call_json(api + "/api/results?order=newest")[1]] == ["P-API-1", "P-OTHER"]
    assert len(call_json(api + "/api/results?limit=1")[1]) == 1
    study = rows[0]["study_instance_uid"]
    assert [r["patient_id"] for r in call_json(api + f"/api/results?study_uid={study}")[1]] == ["P-API-1"]
    status, error = call_json(api + "/api/results?since=1.5.2026")
    assert status == 400 and "YYYY-MM-DD" in error["message"]
    status, error = call_json(api + "/api/results?status=great")
    assert status == 400 and "needs_review" in error["message"]

    status, headers, data = call(api + "/api/results.csv?patient_id=P-OTHER")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    csv_rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert [(r["patient_id"], r["status"], r["reason"]) for r in csv_rows] == [("P-OTHER", "failed", "uncalibrated")]
    assert csv_rows[0]["detail"].startswith("'=")  # never a live spreadsheet formula
    assert len(list(csv.DictReader(io.StringIO(call(api + "/api/results.csv")[2].decode())))) == 2

    status, job = call_json(api + f"/api/jobs/{body['job_id']}")
    assert status == 200
    assert (job["status"], job["source"], job["sop_instance_uid"]) == ("done", "api", body["scan"]["sop_instance_uid"])
    assert Path(job["path"]).read_bytes() == path.read_bytes()  # the upload is kept in the spool
    assert call_json(api + "/api/jobs/99999")[0] == 404
    assert call_json(api + "/api/jobs/abc")[0] == 400

    stats = call_json(api + "/api/stats")[1]
    assert stats["jobs"]["done"] == 1
    assert stats["measurements"]["failed"] == 1
    assert stats["measurements"]["measured"] + stats["measurements"]["needs_review"] == 1


def test_bad_uploads_answer_422_with_the_reason_and_the_server_keeps_serving(
        fetalhc_env: pytest.MonkeyPatch, phantom: Phantom, tmp_path: Path) -> None:
    small = phantom.image[::4, ::4]
    with running(max_body_bytes=100_000) as url:
        measure = url + "/api/measure"
        status, body = post(measure, b"certainly not a DICOM file")
        assert (status, body["reason"]) == (422, "not_dicom")
        assert "not a DICOM file" in body["message"] and "the upload" in body["message"]

        status, body = post(measure, png_bytes(small), "image/png")
        assert (status, body["reason"]) == (422, "uncalibrated")
        assert "spacing_mm" in body["message"]
        for bad in ("abc", "0", "-1", "nan", "25"):
            status, body = post(measure + f"?spacing_mm={bad}", png_bytes(small), "image/png")
            assert (status, body["reason"]) == (422, "bad_parameter"), bad
        status, body = post(measure + "?spacing_mm=0.6", b"GIF89a not a png", "image/png")
        assert (status, body["reason"]) == (422, "unreadable_image")
        status, body = post(measure + "?spacing_mm=0.6", PNG_MAGIC + b"\x00" * 64, "image/png")
        assert (status, body["reason"]) == (422, "unreadable_image")
        status, body = post(measure, b"")
        assert (status, body["reason"]) == (422, "empty_upload")

        uncalibrated = write_us_image(tmp_path / "uncal.dcm", small, 0.6, regions=False)
        status, body = post(measure, uncalibrated.read_bytes())
        assert (status, body["reason"]) == (422, "uncalibrated")
        blank = write_us_image(tmp_path / "blank.dcm", np.zeros((120, 160), np.uint8), 0.3)
        status, body = post(measure, blank.read_bytes())
        assert (status, body["reason"], body["hc_mm"]) == (422, "blank_image", None)
        assert_png_data_url(body["overlay_png"])  # the image itself, without an ellipse

        status, body = post(measure, b"\0" * 300_000)
        assert (status, body["reason"]) == (413, "too_large")
        assert call_json(url + "/healthz")[0] == 200  # still serving


# -- access --------------------------------------------------------------------------------------------------------

def test_token_is_required_on_the_api_but_not_on_health_or_page(fetalhc_env: pytest.MonkeyPatch) -> None:
    fetalhc_env.setenv("FETALHC_API_TOKEN", "s3cret-token")
    with running() as url:
        for path in ("/api/results", "/api/results.csv", "/api/stats", "/api/jobs/1"):
            status, headers, _ = call(url + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert call(url + path, headers={"Authorization": "Bearer wrong-token"})[0] == 401
            assert call(url + path, headers={"Authorization": "s3cret-token"})[0] == 401  # scheme missing
        assert post(url + "/api/measure", b"x" * 100)[0] == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert call_json(url + "/api/results", headers=good) == (200, [])
        assert call(url + "/api/results.csv", headers=good)[0] == 200
        assert call(url + "/api/stats", headers=good)[0] == 200
        assert call(url + "/api/jobs/1", headers=good)[0] == 404
        assert call(url + "/healthz")[0] == 200
        assert call(url + "/")[0] == 200

        # A refused upload is never read: the connection closes rather than parse it as the next request.
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/api/measure", body=b"GET /api/results HTTP/1.1\r\n\r\n" * 10)
        refused = conn.getresponse()
        refused.read()
        assert (refused.status, refused.getheader("Connection")) == (401, "close")
        conn.close()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # while answered requests keep it open
        for _ in range(2):
            conn.request("GET", "/api/stats", headers=good)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200 and answer.getheader("Connection") is None
        conn.close()


def test_page_has_the_form_and_loads_nothing_from_outside(api: str) -> None:
    status, headers, data = call(api + "/")
    page = data.decode()

    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for needle in ('type="file"', 'id="spacing"', 'id="ga"', 'id="store"', 'id="token"', 'id="measure"',
                   "/api/measure", "/api/results", "sessionStorage", "Authorization"):
        assert needle in page, needle
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*//""", page)
    assert "innerHTML" not in page
    # The Content-Security-Policy names the inline script and style by hash: browsers would refuse them otherwise.
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    for tag in ("script", "style"):
        inline = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S).group(1)  # type: ignore[union-attr]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp, tag


def test_unknown_paths_and_methods(api: str) -> None:
    assert call_json(api + "/nothing/here")[0] == 404
    status, headers, _ = call(api + "/api/results", "POST", b"{}")
    assert status == 405 and headers["Allow"] == "GET"
    assert call_json(api + "/api/measure")[0] == 405


def test_logs_never_carry_query_values(api: str, caplog: pytest.LogCaptureFixture,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "SECRET-PID-4711"

    assert call(api + f"/api/results?patient_id={secret}&study_uid={secret}")[0] == 200
    assert call(api + f"/api/results.csv?patient_id={secret}")[0] == 200
    assert call(api + f"/api/results?since={secret}")[0] == 400
    assert call(api + f"/no/such/page?patient_id={secret}")[0] == 404
    assert post(api + f"/api/measure?patient_id={secret}", b"not dicom")[0] == 422
    with socket.create_connection(("127.0.0.1", int(api.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(f"GET /api/results?patient_id={secret} HTTP/1.1 trailing-junk\r\n\r\n".encode())
        assert b"400" in sock.recv(4096)  # http.server's own "Bad request syntax" answer

    logged = caplog.text + "".join(capfd.readouterr())
    assert "GET /api/results 200" in caplog.text  # requests are logged...
    assert "GET /no/such/page 404" in caplog.text
    assert secret not in logged  # ...without their query strings


# -- configuration ------------------------------------------------------------------------------------------------

def test_serve_defaults_to_loopback_and_warns_when_exposed_without_token(
        fetalhc_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from worker.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    caplog.set_level(logging.WARNING, logger="worker.api")
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        server = make_server(get_settings(), host, 0)
        server.server_close()
        assert ("without FETALHC_API_TOKEN" in caplog.text) is warned, host


# -- PostgreSQL -------------------------------------------------------------------------------------------------

def test_results_from_postgresql(fetalhc_env: pytest.MonkeyPatch, pg_url: str) -> None:
    fetalhc_env.setenv("FETALHC_DATABASE_URL", pg_url)
    upgrade(pg_url)
    with session_scope(pg_url) as session:
        upsert_measurement(session, stored_row(patient_id="PG-1", study_date=dt.date(2026, 3, 2), hc_mm=201.5))
        upsert_measurement(session, stored_row(patient_id="PG-2", study_date=dt.date(2026, 4, 2), hc_mm=230.0,
                                               status="needs_review", flags="low_confidence"))
    with running() as url:
        assert call_json(url + "/healthz")[0] == 200
        rows = call_json(url + "/api/results?patient_id=PG-1")[1]
        assert [(r["patient_id"], r["hc_mm"], r["study_date"]) for r in rows] == [("PG-1", 201.5, "2026-03-02")]
        assert [r["patient_id"] for r in call_json(url + "/api/results?since=2026-04-01&until=2026-04-30")[1]] \
            == ["PG-2"]
        assert [r["patient_id"] for r in call_json(url + "/api/results?order=newest")[1]] == ["PG-2", "PG-1"]
        csv_rows = list(csv.DictReader(io.StringIO(call(url + "/api/results.csv?status=needs_review")[2].decode())))
        assert [(r["patient_id"], r["flags"]) for r in csv_rows] == [("PG-2", "low_confidence")]
        stats = call_json(url + "/api/stats")[1]
        assert (stats["measurements"]["measured"], stats["measurements"]["needs_review"]) == (1, 1)


def test_a_database_at_an_unknown_schema_revision_is_503_not_500(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # as if a newer fetalhc had migrated it
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    dispose_all()
    fetalhc_env.setenv("FETALHC_DATABASE_URL", url)

    with running() as base:
        status, body = call_json(base + "/api/results")
    assert status == 503 and body["reason"] == "schema_mismatch"
    assert "9999_from_the_future" in body["message"]


# -- head-plane gate: not_head ---------------------------------------------------------------------------------------

def test_measure_a_non_head_answers_200_not_head_and_results_leave_it_out_unless_asked(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.worker.gate_support import OTHER_SCORE, ShapeGate, head_scan, other_scan, use_gate

    use_gate(fetalhc_env, ShapeGate())  # a test gate: refuses the "other" image's shape, passes the head
    with running() as api:
        status, body = post(api + "/api/measure?store=1&ga_days=150",
                             other_scan(tmp_path / "other.dcm", patient_id="P-NOT-HEAD").read_bytes())
        head_status, head = post(api + "/api/measure?store=1", head_scan(tmp_path / "head.dcm").read_bytes())

        assert status == 200, body
        assert (body["status"], body["reason"], body["head_plane_score"]) == ("not_head", "not_head_plane",
                                                                              OTHER_SCORE)
        assert body["message"] == "not a head plane: head-plane score 0.031 < 0.412"
        for key in ("hc_mm", "bpd_mm", "ofd_mm", "quality", "ellipse"):
            assert body[key] is None, key
        assert body["ga"]["hc_centile"] is None and body["ga"]["estimate_days"] is None
        assert_png_data_url(body["overlay_png"])  # the image, without an ellipse
        assert body["stored"] is True
        assert head_status == 200 and head["status"] in ("measured", "needs_review")
        assert head["head_plane_score"] == 0.93

        assert [r["patient_id"] for r in call_json(api + "/api/results")[1]] == ["P-HEAD"]
        assert [r["patient_id"] for r in call_json(api + "/api/results?order=newest")[1]] == ["P-HEAD"]
        hidden = call_json(api + "/api/results?status=not_head")[1]
        assert [(r["patient_id"], r["status"], r["head_plane_score"]) for r in hidden] == [
            ("P-NOT-HEAD", "not_head", OTHER_SCORE)]
        assert [r["patient_id"] for r in call_json(api + "/api/results?status=not_head&order=newest")[1]] == [
            "P-NOT-HEAD"]
        csv_rows = list(csv.DictReader(io.StringIO(call(api + "/api/results.csv")[2].decode())))
        assert [r["patient_id"] for r in csv_rows] == ["P-HEAD"] and "head_plane_score" in csv_rows[0]
        csv_rows = list(csv.DictReader(io.StringIO(call(api + "/api/results.csv?status=not_head")[2].decode())))
        assert [r["status"] for r in csv_rows] == ["not_head"]
        assert call_json(api + f"/api/jobs/{body['job_id']}")[1]["status"] == "not_head"
        stats = call_json(api + "/api/stats")[1]
        assert stats["jobs"]["not_head"] == 1 and stats["measurements"]["not_head"] == 1


_PAGE_HARNESS = r"""
// A minimal DOM for the page's script: enough to call renderResult and read what it shows.
class Node {
  constructor(tag) { this.tag = tag; this.children = []; this._text = ""; this.className = ""; this.value = "";
    this.classList = { add() {}, remove() {}, toggle() {} }; this.required = false; }
  appendChild(c) { this.children.push(c); return c; }
  replaceChildren(...c) { this.children = c; }
  addEventListener() {}
  set textContent(t) { this._text = String(t); this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
}
const nodes = {};
global.Node = Node;
global.document = { getElementById: (id) => nodes[id] || (nodes[id] = new Node("div")),
  createElement: (tag) => new Node(tag), createTextNode: (t) => { const n = new Node("#text"); n._text = t; return n; },
  body: new Node("body") };
global.sessionStorage = { getItem: () => null, setItem() {} };
global.fetch = () => new Promise(() => {});
const script = require("fs").readFileSync(process.argv[2], "utf8");
eval(script + "\nglobal.renderResult = renderResult;");
renderResult(JSON.parse(process.argv[3]));
console.log(JSON.stringify({ status: nodes["result-status"].textContent, result: nodes["result"].textContent }));
"""


def _render(tmp_path: Path, answer: dict[str, Any]) -> dict[str, str]:
    """What the page shows for one /api/measure answer (its own script run in node with a tiny DOM)."""
    import shutil
    import subprocess

    from worker.api.page import _JS

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed: the page's script cannot be run here")
    (tmp_path / "page.js").write_text(_JS)
    (tmp_path / "harness.js").write_text(_PAGE_HARNESS)
    out = subprocess.run([node, str(tmp_path / "harness.js"), str(tmp_path / "page.js"), json.dumps(answer)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def test_the_page_shows_not_a_head_plane_with_the_score_instead_of_hc(tmp_path: Path) -> None:
    shown = _render(tmp_path, {"status": "not_head", "reason": "not_head_plane", "head_plane_score": 0.031,
                               "message": "not a head plane: head-plane score 0.031 < 0.412", "hc_mm": None,
                               "flags": [], "spacing": {"x_mm": 0.2, "y_mm": 0.2, "source": "us_region"},
                               "ga": {}, "scan": {}, "model": {}, "stored": False, "overlay_png": None})
    assert shown["status"] == "not a head plane"
    assert "not a head plane (head-plane score 0.031)" in shown["result"]
    assert "HC (mm)" not in shown["result"] and "GA from HC" not in shown["result"]

    measured = _render(tmp_path, {"status": "measured", "hc_mm": 181.2, "bpd_mm": 50.0, "ofd_mm": 60.0,
                                  "quality": 0.9, "head_plane_score": 0.97, "flags": [], "spacing": {},
                                  "ga": {"days": None}, "scan": {}, "model": {}, "stored": False})
    assert measured["status"] == "measured"
    assert "HC (mm)181.2" in measured["result"] and "Head-plane score0.970" in measured["result"]
    assert "not a head plane" not in measured["result"]


def test_measure_refuses_a_scan_over_the_memory_budget(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``FETALHC_MAX_SCAN_MB`` bounds /api/measure as it bounds the worker: 422 ``over_memory_budget``."""
    fetalhc_env.setenv("FETALHC_MAX_SCAN_MB", "0.1")  # less than one 480 x 640 frame (0.29 MiB)
    path = write_us_image(tmp_path / "big.dcm", np.zeros((480, 640), np.uint8), 0.15)
    with running() as url:
        status, body = post(url + "/api/measure", path.read_bytes())
    assert (status, body["status"], body["reason"]) == (422, "failed", "over_memory_budget")
    assert "FETALHC_MAX_SCAN_MB" in body["message"]
