"""The HTTP server against slow and stalled clients (issue 21, item 7): real sockets on loopback.

300 connections from another address (all of 127/8 is loopback) each send part of a request's headers and then a
header line now and then (slowloris); before, they held every slot up to uvicorn's ``limit_concurrency`` and
everyone else got 503. Now: beyond ``FETALHC_API_MAX_CONNECTIONS_PER_ADDRESS`` they are closed at once, the rest
within ``FETALHC_API_HEADER_TIMEOUT`` (408) although they keep sending, and other clients are answered all along.
A body that stalls after its headers is cut off too.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from worker.api import make_server
from worker.core.settings import get_settings

ATTACKER = "127.0.0.2"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture()
def api(fetalhc_env: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    fetalhc_env.setenv("FETALHC_API_HEADER_TIMEOUT", "2")
    fetalhc_env.setenv("FETALHC_API_MAX_CONNECTIONS_PER_ADDRESS", "8")
    get_settings.cache_clear()
    server = make_server(get_settings(), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url, int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _status(url: str) -> int:
    try:
        with _OPENER.open(url + "/healthz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``seconds``, and what it sent before closing."""
    end, got = time.monotonic() + seconds, b""
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        except TimeoutError:
            return False, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slowloris_cannot_make_others_wait_or_get_503(api: tuple[str, int]) -> None:
    url, port = api
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
             for _ in range(300)]
    stop = threading.Event()

    def dribble() -> None:
        for sock in socks:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            except OSError:
                pass
        while not stop.wait(0.5):
            for sock in socks:
                try:
                    sock.send(b"X-a: b\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        time.sleep(0.5)
        held = [s for s in socks if not _closed_within(s, 0.05)[0]]
        assert len(held) == 8, "beyond 8 per address, connections are closed at once"
        while time.monotonic() - started < 2.5:  # others are answered all along, never 503
            assert _status(url) == 200
            time.sleep(0.2)
        outcomes = [_closed_within(s, 4) for s in held]
        assert all(closed for closed, _ in outcomes), "a request whose headers never end is cut off"
        assert all(sent.startswith(b"HTTP/1.1 408") for _, sent in outcomes)
        assert time.monotonic() - started < 8
        again = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        closed, answer = _closed_within(again, 5)
        assert answer.startswith(b"HTTP/1.1 "), answer[:80]  # the address's slots were given back
        again.close()
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_a_stalled_body_is_cut_off(fetalhc_env: pytest.MonkeyPatch) -> None:
    import worker.api.server

    assert worker.api.server.BODY_TIMEOUT_S > 120  # the app's own 408 for a slow upload comes first
    fetalhc_env.setattr(worker.api.server, "BODY_TIMEOUT_S", 1.5)  # here: seconds, not minutes
    get_settings.cache_clear()
    server = make_server(get_settings(), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = int(server.socket.getsockname()[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /api/measure HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\n"
                     b"Content-Length: 1000000\r\n\r\n" + b"x" * 100)
        started = time.monotonic()
        closed, _ = _closed_within(sock, 5)
        assert closed and time.monotonic() - started < 4, "a body that stalls is cut off at its deadline"
        sock.close()
        assert _status(server.url) == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
