"""The FastAPI app's protections, through FastAPI's TestClient and against a real ``fetalhc serve``:
token, Host (DNS rebinding), Origin and content types of writes, body limits, one measurement at a time."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dicom_io.writer import write_us_image
from worker.api import ApiApp, create_app
from worker.core.settings import get_settings


def client(max_body_bytes: int = 64 * 1024 * 1024, bind_host: str = "127.0.0.1") -> TestClient:
    get_settings.cache_clear()
    return TestClient(create_app(ApiApp(get_settings(), max_body_bytes), bind_host), base_url="http://127.0.0.1:8080")


@pytest.fixture()
def scan(tmp_path: Path) -> bytes:
    return write_us_image(tmp_path / "blank.dcm", np.zeros((120, 160), np.uint8), 0.3).read_bytes()


def test_openapi_schema_and_docs_are_served(fetalhc_env: pytest.MonkeyPatch) -> None:
    with client() as c:
        schema = c.get("/openapi.json").json()
        assert {"/healthz", "/api/results", "/api/results.csv", "/api/stats", "/api/jobs/{job_id}",
                "/api/measure"} <= set(schema["paths"])
        assert "MeasureOut" in schema["components"]["schemas"] and "MeasurementOut" in schema["components"]["schemas"]
        docs = c.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_without_a_token_only_the_servers_own_names_answer(fetalhc_env: pytest.MonkeyPatch) -> None:
    with client() as c:
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost", "10.1.2.3:8080"):
            assert c.get("/api/results", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.nip.io:8080", ""):
            answer = c.get("/api/results", headers={"Host": host})
            assert (answer.status_code, answer.json()["reason"]) == (403, "host_not_allowed"), host
            assert c.get("/", headers={"Host": host}).status_code == 403


def test_with_a_token_other_names_answer_but_only_with_the_token(fetalhc_env: pytest.MonkeyPatch) -> None:
    fetalhc_env.setenv("FETALHC_API_TOKEN", "t0ken")
    with client() as c:
        assert c.get("/api/stats", headers={"Host": "fetalhc.hospital.example"}).status_code == 401
        good = {"Host": "fetalhc.hospital.example", "Authorization": "Bearer t0ken"}
        assert c.get("/api/stats", headers=good).status_code == 200
        answer = c.get("/api/stats", headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")


def test_writes_from_a_foreign_origin_are_refused(fetalhc_env: pytest.MonkeyPatch, scan: bytes) -> None:
    with client() as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": "http://127.0.0.1:9999"}, {"Sec-Fetch-Site": "cross-site"}):
            answer = c.post("/api/measure", content=scan, headers={"Content-Type": "application/dicom", **headers})
            assert (answer.status_code, answer.json()["reason"]) == (403, "foreign_origin"), headers
        same = c.post("/api/measure", content=scan, headers={"Content-Type": "application/dicom",
                                                              "Origin": "http://127.0.0.1:8080"})
        assert (same.status_code, same.json()["reason"]) == (422, "blank_image")  # measured: nothing there
        assert c.get("/api/results", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS


def test_form_content_types_are_refused_with_415(fetalhc_env: pytest.MonkeyPatch, scan: bytes) -> None:
    with client() as c:
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "Text/Plain; charset=utf-8"):
            answer = c.post("/api/measure", content=scan, headers={"Content-Type": kind})
            assert (answer.status_code, answer.json()["reason"]) == (415, "unsupported_media_type"), kind


def test_body_limits(fetalhc_env: pytest.MonkeyPatch) -> None:
    with client(max_body_bytes=1000) as c:
        answer = c.post("/api/measure", content=b"\0" * 1001, headers={"Content-Type": "application/dicom"})
        assert (answer.status_code, answer.json()["reason"]) == (413, "too_large")
        assert answer.headers["connection"] == "close"
        chunked = c.post("/api/measure", content=iter([b"\0" * 10]), headers={"Content-Type": "application/dicom"})
        assert (chunked.status_code, chunked.json()["reason"]) == (411, "length_required")


def test_one_measurement_at_a_time_within_the_request_deadline(fetalhc_env: pytest.MonkeyPatch, scan: bytes) -> None:
    import worker.api.routes

    fetalhc_env.setattr(worker.api.routes, "REQUEST_DEADLINE_S", 0.5)
    app = ApiApp(get_settings())
    with TestClient(create_app(app), base_url="http://127.0.0.1") as c:
        app.context()  # the model loaded: the wait below is for the lock alone
        with app.measure_lock:  # another measurement is running, longer than the deadline
            answer = c.post("/api/measure", content=scan, headers={"Content-Type": "application/dicom"})
        assert (answer.status_code, answer.json()["reason"]) == (503, "busy")
        assert c.post("/api/measure", content=scan,
                      headers={"Content-Type": "application/dicom"}).json()["reason"] == "blank_image"


def test_a_stored_upload_is_not_world_readable(fetalhc_env: pytest.MonkeyPatch, scan: bytes) -> None:
    with client() as c:
        answer = c.post("/api/measure?store=1", content=scan, headers={"Content-Type": "application/dicom"})
        assert answer.status_code == 422 and answer.json()["job_id"] is not None
        path = Path(c.get(f"/api/jobs/{answer.json()['job_id']}").json()["path"])
        assert path.is_file() and path.stat().st_mode & 0o007 == 0


# -- a real `fetalhc serve` -----------------------------------------------------------------------------------------

@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[str]] = []

    def start(**env: str) -> tuple[str, int]:
        script = shutil.which("fetalhc", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "worker.cli"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FETALHC_")}
        environment.update({"FETALHC_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
                            "FETALHC_SPOOL_DIR": str(tmp_path / "spool"), "FETALHC_DEVICE": "cpu", **env})
        process = subprocess.Popen([*command, "serve", "--port", "0"], env=environment, stderr=subprocess.PIPE,
                                   text=True)
        processes.append(process)
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"on http://([\d.]+):(\d+)/", line)
            if found:
                return found.group(1), int(found.group(2))
        raise AssertionError(f"fetalhc serve did not start (exit {process.wait()})")

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                assert process.wait(30) == 0  # Ctrl-C: a clean stop
            finally:
                if process.poll() is None:
                    process.kill()


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def test_a_real_server_without_a_token(serve, tmp_path: Path, scan: bytes) -> None:  # type: ignore[no-untyped-def]
    host, port = serve()
    assert request(host, port, "GET", "/healthz")[0] == 200
    assert request(host, port, "GET", "/api/results")[0] == 200
    assert request(host, port, "GET", "/api/results", headers={"Host": "rebind.evil.example"})[0] == 403
    dicom = {"Content-Type": "application/dicom"}
    assert request(host, port, "POST", "/api/measure", scan, {**dicom, "Origin": "http://evil.example"})[0] == 403
    assert request(host, port, "POST", "/api/measure", scan, {"Content-Type": "text/plain"})[0] == 415
    status, _, body = request(host, port, "POST", "/api/measure", scan, dicom)
    assert status == 422 and b"blank_image" in body

    # 64 MB: a bigger body is refused from its Content-Length, before it is sent.
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.putrequest("POST", "/api/measure")
    conn.putheader("Content-Type", "application/dicom")
    conn.putheader("Content-Length", str(64 * 1024 * 1024 + 1))
    conn.endheaders()
    answer = conn.getresponse()
    assert (answer.status, answer.getheader("Connection")) == (413, "close") and b"too_large" in answer.read()
    conn.close()


def test_a_real_server_with_a_token(serve, scan: bytes) -> None:  # type: ignore[no-untyped-def]
    host, port = serve(FETALHC_API_TOKEN="serve-t0ken")
    assert request(host, port, "GET", "/api/stats")[0] == 401
    good = {"Authorization": "Bearer serve-t0ken"}
    assert request(host, port, "GET", "/api/stats", headers=good)[0] == 200
    assert request(host, port, "GET", "/api/stats", headers={**good, "Host": "fetalhc.example"})[0] == 200
    assert request(host, port, "GET", "/")[0] == 200 and request(host, port, "GET", "/healthz")[0] == 200
    status, _, body = request(host, port, "POST", "/api/measure", scan, {**good, "Content-Type": "application/dicom"})
    assert status == 422 and b"blank_image" in body
