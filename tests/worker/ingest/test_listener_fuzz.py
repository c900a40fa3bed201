"""Fuzzing the listener over real sockets: malformed PDUs and truncated associations never stop it serving.

The dicom_io fuzz test (``tests/dicom_io/test_fuzz.py``) mutates files; this one mutates what a peer
sends: random bytes, PDU headers with absurd lengths, an A-ASSOCIATE-RQ cut anywhere, a valid
association followed by a garbage P-DATA. After each, a real C-ECHO must still succeed.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation
from pynetdicom.sop_class import UltrasoundImageStorage, Verification  # type: ignore[attr-defined]

from tests.worker.ingest_support import free_port, ingest_settings  # noqa: F401 - fixture
from worker.ingest.listener import start_listener
from worker.core.settings import Settings

EXAMPLES = int(os.environ.get("FETALHC_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One listener for the module (short timeouts, so half-open peers go quickly)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("fuzz")
    mp.setenv("FETALHC_DATABASE_URL", f"sqlite:///{tmp / 'fuzz.db'}")
    mp.setenv("FETALHC_SPOOL_DIR", str(tmp / "spool"))
    mp.setenv("FETALHC_BROKER_URL", "redis://127.0.0.1:9/0")  # nothing is stored by these peers anyway
    mp.setenv("FETALHC_DICOM_TIMEOUT", "1")
    mp.setenv("FETALHC_MAX_ASSOCIATIONS", "64")
    settings_ = Settings()
    number = free_port()
    server = start_listener(settings_, host="127.0.0.1", port=number)
    try:
        yield number
    finally:
        server.shutdown()
        mp.undo()


def _association_rq() -> bytes:
    """A well-formed A-ASSOCIATE-RQ PDU from SCANNER to FETALHC proposing Verification and US Image Storage."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "SCANNER"
    primitive.called_ae_title = "FETALHC"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    contexts = [build_context(Verification), build_context(UltrasoundImageStorage)]
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    primitive.presentation_context_definition_list = contexts
    from pynetdicom.pdu_primitives import MaximumLengthNotification

    item = MaximumLengthNotification()
    item.maximum_length_received = 16382
    primitive.user_information = [item]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


ASSOCIATE_RQ = _association_rq()


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """What a broken or hostile peer sends on a fresh connection."""
    kind = draw(st.sampled_from(["random", "header", "cut", "mutated", "pdata"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=512))
    if kind == "header":  # a PDU type (valid or not) with any length, and a little body
        pdu_type = draw(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0xFF]))
        length = draw(st.sampled_from([0, 1, 6, 0x7FFFFFFF, 0xFFFFFFFF, draw(st.integers(0, 1 << 20))]))
        return struct.pack(">BBI", pdu_type, 0, length) + draw(st.binary(max_size=64))
    if kind == "cut":  # a truncated association request
        return ASSOCIATE_RQ[: draw(st.integers(1, len(ASSOCIATE_RQ) - 1))]
    if kind == "mutated":
        data = bytearray(ASSOCIATE_RQ)
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    # a whole association request, then a P-DATA-TF with a garbage PDV
    body = draw(st.binary(min_size=0, max_size=128))
    pdv = struct.pack(">IB", len(body) + 2, draw(st.sampled_from([1, 3, 5]))) + bytes([draw(st.integers(0, 3))]) + body
    return ASSOCIATE_RQ + struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def _echo(port: int) -> int:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
@given(stream=hostile_streams(), close_early=st.booleans())
def test_hostile_peers_never_stop_the_listener(port: int, stream: bytes, close_early: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(stream)
            if not close_early:  # read whatever it answers (a reject, an abort) until it hangs up
                sock.settimeout(3)
                while sock.recv(4096):
                    pass
        except OSError:
            pass  # the listener hung up on us: fine
    assert _echo(port) == 0x0000
