"""Fuzzing the reader with mutated real files: it yields valid Scans or raises DicomError, nothing else."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_io import DicomError, Scan, iter_scans
from us_files import real_file

# Small real files covering the decoders: palette RLE, JPEG lossless, JPEG 2000 YBR_RCT, JPEG baseline
# YBR_FULL_422 cine (calibration out of bounds: mutations may make it fit), 16-bit palette dual view.
BASES = ("OBXXXX1A_rle.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "US1_J2KR.dcm", "examples_ybr_color.dcm",
         "gdcm-US-ALOKA-16_big.dcm")
HEADER_SPAN = 8192  # most structure lives in the first bytes: mutate there more often
# FETALHC_FUZZ_EXAMPLES raises the count for a longer campaign; CI runs the default.
EXAMPLES = int(os.environ.get("FETALHC_FUZZ_EXAMPLES", "100"))
SPECIAL_WORDS = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x01\x00",
                 b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0")


@functools.cache
def base_bytes(name: str) -> bytes:
    return real_file(name).read_bytes()


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A real file with a few random edits: byte flips, special words, cuts, insertions, deletions."""
    data = bytearray(base_bytes(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        span = min(len(data), HEADER_SPAN) if draw(st.booleans()) else len(data)
        pos = draw(st.integers(0, max(span - 1, 0)))
        kind = draw(st.sampled_from(["flip", "word", "cut", "insert", "delete"]))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "word":
            word = draw(st.sampled_from(SPECIAL_WORDS))
            data[pos : pos + len(word)] = word
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
@given(data=mutated_files())
def test_mutated_real_files_raise_only_dicom_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.dcm"
        path.write_bytes(data)
        try:
            scans = list(iter_scans(path))
        except DicomError as exc:
            assert exc.reason and exc.reason.islower() and " " not in exc.reason
            assert str(exc)
            return
    for scan in scans:
        assert isinstance(scan, Scan) and scan.pixels.dtype == np.uint8 and scan.pixels.ndim == 2
        assert 0 < scan.spacing_mm[0] < 10 and 0 < scan.spacing_mm[1] < 10
