"""The HTTP server: uvicorn (h11) serving the FastAPI app on a socket bound at once, as ``fetalhc serve`` runs it."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from worker.api.app import MAX_BODY_BYTES, ApiApp
from worker.api.guards import is_loopback
from worker.api.http_guard import protocol_for
from worker.api.messages import ApiError
from worker.api.routes import REQUEST_DEADLINE_S, create_app
from worker.core.settings import Settings

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)

READ_TIMEOUT_S = 60.0  # an idle keep-alive connection is closed after this
# A request body must be in within this (the app answers a slow upload 408 at REQUEST_DEADLINE_S itself).
BODY_TIMEOUT_S = REQUEST_DEADLINE_S + 10.0


class _NoRequestText(logging.Filter):
    """uvicorn's "Invalid HTTP request received" carries h11's error, which quotes the request line
    (query string included): keep the message, drop the exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info, record.exc_text = None, None
        return True


class _Drop(logging.Filter):
    """uvicorn's access lines quote the request target, query string included: ours (guards) replace them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


class ApiServer:
    """uvicorn on a bound socket: ``serve_forever()`` (blocks), ``shutdown()`` from another thread, ``server_close()``."""

    def __init__(self, sock: socket.socket, app: ApiApp, bind_host: str) -> None:
        self.app = app
        self.socket = sock
        # h11 with deadlines for headers and body and a cap per client address (worker.api.http_guard): slow or
        # stalled clients cannot hold connections until limit_concurrency answers everyone else 503.
        config = uvicorn.Config(create_app(app, bind_host), http=protocol_for(app.settings, BODY_TIMEOUT_S),
                                lifespan="off", log_config=None,
                                access_log=False, server_header=False, timeout_keep_alive=int(READ_TIMEOUT_S),
                                limit_concurrency=256)
        self._server = uvicorn.Server(config)
        self._finished = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until ``shutdown()`` (or SIGINT/SIGTERM in the main thread, which then raise as usual)."""
        self._finished.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._finished.set()

    def shutdown(self) -> None:
        """Stop serving and wait until ``serve_forever`` has returned."""
        self._server.should_exit = True
        self._finished.wait(30)

    def server_close(self) -> None:
        self.socket.close()


def make_server(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
                max_body_bytes: int = MAX_BODY_BYTES) -> ApiServer:
    """Bind the API on (host, port) (port 0: any free port); call ``serve_forever()`` to run it.

    Warns when it listens beyond this machine without ``FETALHC_API_TOKEN``: results hold patient IDs.
    """
    app = ApiApp(settings, max_body_bytes)
    if not app.auth_required and not is_loopback(host):
        log.warning("serving on %s without FETALHC_API_TOKEN: anyone who reaches this port can read results "
                    "and patient IDs; set FETALHC_API_TOKEN or bind to 127.0.0.1", host)
    try:
        app.ensure_schema()
    except ApiError:  # start anyway (logged): /healthz says 503 until the database answers
        pass
    for name, kind in (("uvicorn.error", _NoRequestText), ("uvicorn", _NoRequestText), ("uvicorn.access", _Drop)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return ApiServer(sock, app, host)
