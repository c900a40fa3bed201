"""The HTTP server: a threading server whose handler parses, authorises, reads and dispatches each request."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.exc import SQLAlchemyError

from worker.api.app import MAX_BODY_BYTES, ApiApp
from worker.api.messages import ApiError, Request, Response, json_response
from worker.api.routes import find_route
from worker.settings import Settings

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)

READ_TIMEOUT_S = 60.0  # a client that stops sending for this long is dropped
LINGER_S = 2.0  # after refusing an unread body, how long to drain it before closing (see _linger)


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
