"""The ASGI middleware in front of every route: Host and Origin checks, request logs, a refused body's end.

- **DNS rebinding**: without a token the API trusts whoever reaches it (loopback), so a request
  whose ``Host`` is a name other than this server's own is refused (403 ``host_not_allowed``): a
  page on a rebinding domain must not read patient IDs. IP literals, ``localhost`` and this
  machine's names are its own (a rebinding attack needs a domain name).
- **Cross-origin writes**: a state-changing request (POST, PUT, PATCH, DELETE) carrying an
  ``Origin`` other than the server's own, or ``Sec-Fetch-Site: cross-site``, is refused (403
  ``foreign_origin``). Routes refuse the content types an HTML form can send (415, ``routes``).
- **Logs**: one line per request, method, path and status, never the query string.
- **A body left unread** (refused before reading: 401, 403, 404, 411, 413...): it is drained for up
  to ``LINGER_S`` before the answer goes out with ``Connection: close``, so the client reads the
  answer instead of a connection reset, and the connection never carries another request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from worker.api.messages import API_HEADERS, ApiError, json_bytes

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)

LINGER_S = 2.0  # after refusing an unread body, how long to drain it before answering
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_names(bind_host: str) -> frozenset[str]:
    """The names that are this server's own in a ``Host`` header: localhost, the bind name, this machine's."""
    names = {"localhost", bind_host.lower()}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return frozenset(names)


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_is_own(header: str, names: frozenset[str]) -> bool:
    """An IP literal (no DNS to rebind), or one of ``names``."""
    name = host_name(header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names or name.removesuffix(".") in names


def origin_is_own(origin: str, host_header: str) -> bool:
    """True when ``Origin`` names the scheme-less authority the request was sent to (its ``Host``)."""
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.strip().lower()


def _canonical(name: bytes) -> bytes:
    """``content-type`` as ``Content-Type`` (Starlette writes names in lower case; some clients match exact case)."""
    text = name.decode("latin-1")
    special = {"www-authenticate": "WWW-Authenticate"}
    return special.get(text.lower(), "-".join(part.capitalize() for part in text.split("-"))).encode("latin-1")


class Guard:
    """ASGI middleware: the checks above, then the app; logs each request without its query string."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, token_set: bool, names: frozenset[str]) -> None:
        self.app = app
        self.token_set = token_set
        self.names = names

    def refusal(self, method: str, headers: dict[str, str]) -> ApiError | None:
        host = headers.get("host", "")
        if not self.token_set and not host_is_own(host, self.names):
            return ApiError(403, "host_not_allowed", "this server answers only to its own name or address "
                            "(Host header); set FETALHC_API_TOKEN to serve other names")
        if method in STATE_CHANGING:
            origin = headers.get("origin")
            if (origin is not None and not origin_is_own(origin, host)) or headers.get("sec-fetch-site") == "cross-site":
                return ApiError(403, "foreign_origin", "requests that change data must come from this server's "
                                "own page (Origin)")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        announced = "chunked" in headers.get("transfer-encoding", "").lower() or (
            headers.get("content-length", "0").strip() not in ("", "0"))
        state = {"body_done": not announced, "status": 0}

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            elif message["type"] == "http.disconnect":
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = list(message.get("headers", []))
                if not state["body_done"]:  # refused before reading: drain, then close
                    await self._drain(tracked_receive)
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": [(_canonical(k), v) for k, v in headers]}
            await send(message)

        try:
            refused = self.refusal(method, headers)
            if refused is not None:
                await self._answer(refused, guarded_send)
            else:
                await self.app(scope, tracked_receive, guarded_send)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("%s %s %s %.0fms", method, path, state["status"] or "-", elapsed)

    @staticmethod
    async def _drain(receive: Receive) -> None:
        """Read and drop what is left of the body, for at most LINGER_S."""
        async def drain() -> None:
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
        try:
            await asyncio.wait_for(drain(), LINGER_S)
        except (asyncio.TimeoutError, OSError):
            pass

    @staticmethod
    async def _answer(error: ApiError, send: Send) -> None:
        body = json_bytes(error.body())
        headers = [(k.lower().encode(), v.encode()) for k, v in API_HEADERS.items()]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
