"""Bounds on what a DICOM peer may hold: a deadline and a size cap for its A-ASSOCIATE-RQ, a per-PDU cap, connections per address.

pynetdicom reads each PDU in ``DULServiceProvider._read_pdu_data`` as ``AssociationSocket.recv(6)`` (PDU type,
reserved byte, 4-byte length) and then ``recv(length)``, blocking until every byte is in (its own timeouts are per
``socket.recv`` call and checked between PDUs, so a peer sending one byte every few seconds is never cut off, and a
length of 4 GB is read into memory whole). ``GuardedSocket`` replaces that ``recv``:

* the whole first PDU (the A-ASSOCIATE-RQ: the caller is only known once it is in) must arrive within
  ``FETALHC_ASSOCIATE_TIMEOUT`` seconds of the connection, and may be at most ``ASSOCIATE_RQ_MAX_BYTES`` long;
* every later PDU may be at most ``max_pdu_bytes`` long (``FETALHC_MAX_INSTANCE_MB``, at most ``MAX_PDU_BYTES``),
  its header must arrive within the network timeout and its body within that plus one second per
  ``MIN_PDU_RATE`` bytes;
* the length is checked as soon as the 6-byte header is in, before any of the body is read; a refused PDU gets an
  A-ABORT and the connection is closed at once.

``GuardedServer`` closes a new connection at once when its address already holds
``FETALHC_MAX_ASSOCIATIONS_PER_ADDRESS`` (connections still sending their request count), or when twice
``FETALHC_MAX_ASSOCIATIONS`` connections are still sending theirs, so a few addresses cannot take every slot.
``GuardedAE`` counts only associations whose request is in against ``FETALHC_MAX_ASSOCIATIONS`` (pynetdicom counts
every acceptor thread, so connections that never finish their request would make it refuse known callers with
"local limit exceeded"). A peer cut off before its A-ASSOCIATE-RQ frees its slot at once (``release_unknown_peer``,
bound to ``EVT_CONN_CLOSE``).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

MIB = 1 << 20
# An A-ASSOCIATE-RQ proposing 128 presentation contexts of a dozen transfer syntaxes each is about 40 KB.
ASSOCIATE_RQ_MAX_BYTES = 64 * 1024
# fetalhc proposes a maximum PDU length of 16 KB (pynetdicom's default), which senders must respect; some send
# larger ones anyway, but none needs more than this.
MAX_PDU_BYTES = 16 * MIB
MIN_PDU_RATE = 16 * 1024  # bytes per second a PDU body must keep up, after the network timeout
_HEADER = 6
_CHUNK = 64 * 1024
# A-ABORT PDU (PS3.8 9.3.8): type 07, length 4, source 2 (service provider), reason 6 (invalid PDU parameter value).
_A_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"


@dataclass(frozen=True)
class PeerLimits:
    """What one peer may hold: the A-ASSOCIATE-RQ deadline, the network timeout, the PDU cap, connections per address."""

    associate_timeout_s: float
    network_timeout_s: float
    max_pdu_bytes: int
    per_address: int

    @classmethod
    def from_settings(cls, settings: Any) -> PeerLimits:
        """The limits of ``worker.core.settings.Settings``."""
        return cls(float(settings.associate_timeout_s), float(settings.dicom_timeout_s),
                   min(int(settings.max_instance_mb * MIB), MAX_PDU_BYTES), int(settings.max_associations_per_address))


class PeerRefused(ConnectionAbortedError):
    """A peer broke a bound; pynetdicom's DUL takes this OSError as the connection closing (Evt17)."""


class _QuietRefusals(logging.Filter):
    """pynetdicom logs a refused read as an error with its traceback ("Connection closed before the entire PDU was
    received"); our own warning already says who and why: drop those two records for ``PeerRefused``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else record.msg
        if isinstance(exc, PeerRefused):
            return False
        return not (record.getMessage().startswith("Connection closed before the entire PDU")
                    and _refusing.is_set_here())


class _Refusing(threading.local):
    """Whether this thread (a DUL reactor) has just refused its peer."""

    flag = False

    def is_set_here(self) -> bool:
        return self.flag


_refusing = _Refusing()


class GuardedSocket(AssociationSocket):
    """pynetdicom's acceptor socket with deadlines and size caps on each PDU it reads (see the module docstring)."""

    limits: PeerLimits
    _opened: float
    _known: bool
    _body: int | None

    @classmethod
    def adopt(cls, sock: AssociationSocket, limits: PeerLimits) -> GuardedSocket:
        """Turn the socket pynetdicom made for an accepted connection into a guarded one (same object, same state:
        its constructor has already queued the transport indication, Evt5, so it is not built a second time)."""
        sock.__class__ = cls
        guarded = sock  # type: ignore[assignment]
        assert isinstance(guarded, GuardedSocket)
        guarded.limits, guarded._opened, guarded._known, guarded._body = limits, time.monotonic(), False, None
        return guarded

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes``, or fewer when the peer closes; raise ``PeerRefused`` past a deadline or a size cap."""
        body = self._body is not None and nr_bytes == self._body
        self._body = None
        now = time.monotonic()
        if not self._known:
            deadline = self._opened + self.limits.associate_timeout_s
        elif body:
            deadline = now + self.limits.network_timeout_s + nr_bytes / MIN_PDU_RATE
        else:
            deadline = now + self.limits.network_timeout_s
        data = self._read(nr_bytes, deadline)
        if body:
            self._known = True  # the first PDU is in whole: from now on the caller is known
        elif len(data) == _HEADER:
            pdu_type, _, length = struct.unpack(">BBL", data)
            self._check_length(pdu_type, length)
            self._body = length
        return data

    def _check_length(self, pdu_type: int, length: int) -> None:
        if not self._known and length > ASSOCIATE_RQ_MAX_BYTES:
            self._refuse(f"its A-ASSOCIATE-RQ claims {length} bytes (at most {ASSOCIATE_RQ_MAX_BYTES})")
        if self._known and length > self.limits.max_pdu_bytes:
            self._refuse(f"a PDU of type 0x{pdu_type:02X} claims {length} bytes (at most {self.limits.max_pdu_bytes}: "
                         "FETALHC_MAX_INSTANCE_MB)")

    def _read(self, nr_bytes: int, deadline: float) -> bytearray:
        raw = self.socket
        assert raw is not None
        out = bytearray()
        try:
            while len(out) < nr_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._refuse("it did not send its A-ASSOCIATE-RQ within FETALHC_ASSOCIATE_TIMEOUT"
                                 if not self._known else "a PDU did not arrive within FETALHC_DICOM_TIMEOUT")
                raw.settimeout(left)
                try:
                    chunk = raw.recv(min(_CHUNK, nr_bytes - len(out)))
                except TimeoutError:
                    continue  # the loop's deadline check refuses it
                if not chunk:
                    return out  # closed by the peer: pynetdicom sees a short read (Evt17)
                out += chunk
            return out
        finally:
            if self.socket is not None:
                self.socket.settimeout(self.limits.network_timeout_s)  # pynetdicom's sends: as before a read

    def _refuse(self, why: str) -> None:
        address = getattr(self.assoc.requestor, "address", "?")
        log.warning("closed the connection from %s: %s", address, why)
        _refusing.flag = True  # this DUL thread ends with this connection
        try:
            if self.socket is not None:
                self.socket.settimeout(1.0)
                self.socket.sendall(_A_ABORT)
        except OSError:
            pass
        raise PeerRefused(why)


def is_known(assoc: Any) -> bool:
    """Whether an acceptor association's A-ASSOCIATE-RQ has been read whole (a closed one counts as known)."""
    return bool(getattr(getattr(assoc.dul, "socket", None), "_known", True))


class GuardedAE(AE):
    """pynetdicom's AE whose ``maximum_associations`` counts only associations whose A-ASSOCIATE-RQ is in.

    pynetdicom refuses an association when its acceptor threads outnumber ``maximum_associations``
    (``ACSE._negotiate_as_acceptor``); connections still sending their request are raised onto the limit here,
    so they never count against it (they are bounded by ``GuardedServer`` instead).
    """

    @property  # type: ignore[override]
    def maximum_associations(self) -> int:
        unknown = sum(1 for a in self.active_associations if a.is_acceptor and not is_known(a))
        return int(self._maximum_associations) + unknown

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        AE.maximum_associations.fset(self, value)  # type: ignore[attr-defined]

    @property
    def configured_associations(self) -> int:
        """``FETALHC_MAX_ASSOCIATIONS`` as set."""
        return int(self._maximum_associations)


def release_unknown_peer(event: evt.Event) -> None:
    """EVT_CONN_CLOSE: a connection closed before its A-ASSOCIATE-RQ was read frees its association thread now.

    pynetdicom's acceptor thread waits ``acse_timeout`` for the request primitive and takes ``None`` as that
    timeout (``Association.run_reactor``): it then stops the DUL and closes the socket. Putting ``None`` there
    ends the wait at once instead of holding the slot until the timeout.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the accepted connection's socket guarded (``GuardedSocket``)."""

    server: GuardedServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        GuardedSocket.adopt(assoc.dul.socket, self.server.limits)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with a limit of open connections per client address."""

    def __init__(self, *args: Any, limits: PeerLimits, **kwargs: Any) -> None:
        self.limits = limits
        self._starting: Counter[str] = Counter()  # accepted, association thread not started yet
        self._count_lock = threading.Lock()
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)

    def held_by(self, address: str) -> int:
        """Connections ``address`` holds now (associations, and those whose thread is starting)."""
        return self._starting[address] + sum(1 for a in self.active_associations if a.requestor.address == address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close at once) a connection from an address that already holds its share, or when twice the
        association limit are still sending their request."""
        address = str(client_address[0])
        with self._count_lock:
            if self.held_by(address) >= self.limits.per_address:
                log.warning("closed a connection from %s at once: it already holds %d (FETALHC_MAX_ASSOCIATIONS_"
                            "PER_ADDRESS)", address, self.limits.per_address)
                return False
            unknown = sum(self._starting.values()) + sum(1 for a in self.active_associations if not is_known(a))
            limit = 2 * int(getattr(self.ae, "configured_associations", self.ae.maximum_associations))
            if unknown >= limit:
                log.warning("closed a connection from %s at once: %d connections are still sending their request",
                            address, unknown)
                return False
            self._starting[address] += 1
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Start the association (pynetdicom), then count it by its thread instead of as starting."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            address = str(client_address[0])
            with self._count_lock:
                self._starting[address] -= 1
                if self._starting[address] <= 0:
                    del self._starting[address]

    def shutdown_request(self, request: Any) -> None:
        """Close a refused or finished connection (socketserver's, tolerant of a socket already closed)."""
        try:
            request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        request.close()


def start_guarded_server(ae: AE, address: tuple[str, int], handlers: list[Any], limits: PeerLimits) -> GuardedServer:
    """Serve ``ae`` on ``address`` in a background thread, as ``AE.start_server(block=False)`` does, guarded.

    Also sets ``ae.acse_timeout`` to at most ``limits.associate_timeout_s``: a connection that sends nothing
    is dropped once that passes (pynetdicom's ARTIM timer and its wait for the request).
    """
    ae.acse_timeout = min(float(ae.acse_timeout or limits.associate_timeout_s), limits.associate_timeout_s)
    dul_log = logging.getLogger("pynetdicom.dul")
    if not any(isinstance(f, _QuietRefusals) for f in dul_log.filters):
        dul_log.addFilter(_QuietRefusals())
    server = ae.make_server(address, evt_handlers=[*handlers, (evt.EVT_CONN_CLOSE, release_unknown_peer)],
                            server_class=GuardedServer, limits=limits)
    thread = threading.Thread(target=server.serve_forever, name=f"GuardedServer@{address[1]}", daemon=True)
    thread.start()
    ae._servers.append(server)  # so AE.shutdown() stops it too, as for pynetdicom's own servers
    return server  # type: ignore[return-value]
