"""uvicorn's h11 protocol with deadlines for a request's headers and body and a cap on connections per client address.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but has no deadline for a request that is
arriving: a client that sends part of its headers and then a byte now and then holds its connection for ever, and
``limit_concurrency`` then answers every other client 503 once enough of them are held (slowloris). Here:

* the request line and headers must arrive within ``header_timeout_s`` of the first byte of the request (or of
  the connection): else ``408`` and the connection is closed;
* the body, once the headers are in, within ``body_timeout_s`` (longer than the app's own 120 s deadline for an
  upload, which answers 408 itself): else the connection is closed;
* a client address holds at most ``per_address`` connections; one more is closed at once, so one address cannot
  take the server's ``limit_concurrency`` and make others get 503.

It relies on uvicorn's ``H11Protocol`` keeping its h11 connection in ``self.conn`` (``their_state`` IDLE while a
request's headers arrive, SEND_BODY while its body does) and calling ``connection_made``/``data_received``/
``connection_lost`` as an ``asyncio.Protocol``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("worker.api")

_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def guarded_protocol(header_timeout_s: float, body_timeout_s: float, per_address: int) -> type[H11Protocol]:
    """An ``H11Protocol`` class with these limits (one count of connections per address for each class made)."""
    held: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        """See the module docstring."""

        _address: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _phase: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = str(self.client[0]) if self.client else ""
            if held[address] >= per_address:
                log.warning("closed a connection from %s at once: it already holds %d (FETALHC_API_MAX_CONNECTIONS_"
                            "PER_ADDRESS)", address, per_address)
                self.connections.discard(self)
                transport.abort()
                return
            self._address = address
            held[address] += 1
            self._arm("headers", header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                held[self._address] -= 1
                if held[self._address] <= 0:
                    del held[self._address]
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._address is None:
                return  # refused in connection_made
            if self._phase is None and self.conn.their_state is h11.IDLE:
                self._arm("headers", header_timeout_s)  # a new request on a kept-alive connection
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def _follow(self) -> None:
            """Move the deadline along with the request: headers, then body, then none (the app answers)."""
            state = self.conn.their_state
            if self._phase == "headers" and state is not h11.IDLE:
                self._disarm()
            if state is h11.SEND_BODY and self._phase is None:
                self._arm("body", body_timeout_s)
            elif state is not h11.SEND_BODY and self._phase == "body":
                self._disarm()

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired, phase)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._phase = None, None

        def _expired(self, phase: str) -> None:
            self._timer, self._phase = None, None
            if self.transport.is_closing():
                return
            log.warning("closed a connection from %s: its request %s did not arrive in time", self._address, phase)
            if phase == "headers":
                self.transport.write(_TIMEOUT_408)
            self.transport.close()

    return GuardedH11Protocol


def protocol_for(settings: Any, body_timeout_s: float) -> type[H11Protocol]:
    """The guarded protocol with the limits of ``worker.core.settings.Settings``."""
    return guarded_protocol(float(settings.api_header_timeout_s), body_timeout_s,
                            int(settings.api_max_connections_per_address))
