"""``fetalhc listen`` against peers that hold what they can before they are known (issue 21, items 1 and 2).

Real sockets on loopback against the listener in its own process: connections that dribble an A-ASSOCIATE-RQ a
byte at a time from another address (all of 127/8 is loopback), a request header that claims 4 GB followed by a
stream of bytes, and a P-DATA PDU that claims 700 MB on an established association. Each must be cut off, free
its slot, and leave the listener's peak memory (VmHWM) where it was, while a real modality is served.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage  # type: ignore[attr-defined]

from tests.integration.test_hostile_listener import dcmtk, listening, scu  # noqa: F401 - dcmtk is a fixture
from tests.services import wait_for
from tests.worker.ingest_support import tiny_us

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"


def _connect(port: int, source: str = ATTACKER) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the listener closes ``sock`` within ``seconds`` (an A-ABORT before the close is fine)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            if sock.recv(4096) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _closed_after(socks: list[socket.socket], wait_s: float) -> list[socket.socket]:
    """The sockets the listener has closed ``wait_s`` from now (all looked at together, not one after another)."""
    time.sleep(wait_s)
    closed = []
    for sock in socks:
        sock.setblocking(False)
        try:
            while chunk := sock.recv(4096):  # an A-ABORT may come before the close
                del chunk
            closed.append(sock)
        except BlockingIOError:
            pass  # open: nothing to read yet
        except (ConnectionResetError, BrokenPipeError):
            closed.append(sock)
        finally:
            sock.setblocking(True)
    return closed


class _Dribbler:
    """Sends the 6-byte header of a 300-byte A-ASSOCIATE-RQ on each socket, then one byte every ``every_s``."""

    def __init__(self, socks: list[socket.socket], every_s: float) -> None:
        self.socks, self.every_s, self.stop = socks, every_s, threading.Event()
        for sock in socks:
            sock.sendall(b"\x01\x00" + struct.pack(">L", 300))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            for sock in self.socks:
                try:
                    sock.send(b"\x00")
                except OSError:
                    pass  # this one was closed by the listener


def test_dribbled_requests_cannot_lock_out_a_known_caller(dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    with listening(tmp_path, redis_url, MAX_ASSOCIATIONS="4", MAX_ASSOCIATIONS_PER_ADDRESS="3",
                   ASSOCIATE_TIMEOUT="3", ALLOWED_CALLERS="SCANNER,127.0.0.0/8") as listener:
        # 10 from one address and 3 from another: 6 held, more than the 4 associations, none of them known.
        socks = [_connect(listener.port) for _ in range(10)] + [_connect(listener.port, "127.0.0.3") for _ in range(3)]
        dribbler = _Dribbler(socks, every_s=0.5)
        connected = time.monotonic()
        try:
            closed_now = _closed_after(socks, 0.5)
            assert len(closed_now) == 7, "beyond 3 per address, connections are closed at once"
            # The scanner (another address) is served at once and all along, while the dribbling goes on.
            echoes = time.monotonic()
            for _ in range(3):
                echo = scu("echoscu", listener.port)
                assert echo.returncode == 0, echo.stdout + echo.stderr
            assert time.monotonic() - echoes < 3
            held = [s for s in socks if s not in closed_now]
            assert all(_closed_within(s, 5) for s in held), "a dribbled request is cut off at ASSOCIATE_TIMEOUT"
            assert time.monotonic() - connected < 3 + 3  # ASSOCIATE_TIMEOUT and a margin, though they dribble on
            # Their slots are free: the attacker's address may connect again, and a store goes through.
            again = _connect(listener.port)
            assert not _closed_within(again, 0.5)
            again.close()
            sent = scu("storescu", listener.port, [tiny_us(tmp_path / "s.dcm")])
            assert sent.returncode == 0 and "Store Failed" not in sent.stderr, sent.stderr
        finally:
            dribbler.stop.set()
            for sock in socks:
                sock.close()
        assert len(listener.jobs()) == 1
        assert "did not send its A-ASSOCIATE-RQ within FETALHC_ASSOCIATE_TIMEOUT" in listener.log()


def _stream(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` zero bytes; how many went before the listener closed the connection."""
    chunk, sent = bytes(1 << 20), 0
    sock.settimeout(10)
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset, broken pipe, timed out, or closed on our side once the A-ABORT came in
        pass
    return sent


def test_a_request_claiming_4_gb_is_refused_from_its_header(dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    with listening(tmp_path, redis_url) as listener:
        before = listener.peak_rss_mb()
        sock = _connect(listener.port)
        sock.sendall(b"\x01\x00" + struct.pack(">L", 0xFFFF0000))
        sent = _stream(sock, 256 << 20)
        sock.close()
        assert sent < 64 << 20, f"{sent >> 20} MiB went in before the listener closed the connection"
        grew = listener.peak_rss_mb() - before
        assert grew < 30, f"the listener's peak RSS grew {grew:.0f} MB"
        assert "its A-ASSOCIATE-RQ claims 4294901760 bytes" in listener.log()
        assert scu("echoscu", listener.port).returncode == 0


def test_a_700_mb_pdu_is_aborted_from_its_header(dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    with listening(tmp_path, redis_url, MAX_INSTANCE_MB="10") as listener:
        before = listener.peak_rss_mb()
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="FETALHC")
        assert assoc.is_established
        raw = assoc.dul.socket.socket  # the association's own connection: a P-DATA-TF PDU that claims 700 MB
        raw.sendall(b"\x04\x00" + struct.pack(">L", 700 << 20))
        sent = _stream(raw, 96 << 20)
        assert wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=10), "the association was not aborted"
        assert sent < 64 << 20, f"{sent >> 20} MiB went in before the listener aborted"
        grew = listener.peak_rss_mb() - before
        assert grew < 30, f"the listener's peak RSS grew {grew:.0f} MB"
        assert "a PDU of type 0x04 claims 734003200 bytes" in listener.log()
        assert wait_for(lambda: not list(listener.tmp.iterdir()), timeout=10)
        sent_ok = scu("storescu", listener.port, [tiny_us(tmp_path / "ok.dcm")])
        assert sent_ok.returncode == 0 and "Store Failed" not in sent_ok.stderr, sent_ok.stderr
        assert len(listener.jobs()) == 1
