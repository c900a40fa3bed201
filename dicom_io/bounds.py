"""Decoder bounds: compressed frame headers checked against the image header, bounded inflate, a memory budget.

A decompression bomb is a few kilobytes whose own header claims far more pixels than the DICOM
header declares, or a deflated dataset that inflates far past what its header needs. Decoders
allocate from their own header, so everything is checked here before a decoder runs:

- JPEG (SOF0-SOF15, ITU-T T.81 B.2.2) and JPEG-LS (SOF55, ITU-T T.87 C.2.2) frame headers, and the
  JPEG 2000 SIZ marker segment (ITU-T T.800 A.5.1; raw codestream or JP2 ``jp2c`` box), against
  (0028,0010) Rows, (0028,0011) Columns, (0028,0002) Samples per Pixel and (0028,0100) Bits Allocated;
- deflated datasets (PS3.5 A.5) inflated in chunks with ``zlib`` ``max_length``, never past a cap;
- the memory one scan's decoding holds at once, from its declared size, against ``FETALHC_MAX_SCAN_MB``
  (``scan_budget``; 1024 MiB by default); a JPEG 2000 frame's tiles count too (OpenJPEG keeps state for each
  tile: a 640 x 480 image in 1 x 1 tiles took 1.5 GB), at ``J2K_TILE_BYTES`` each.

Each refusal is a permanent ``DicomError``: ``pixel_header_mismatch`` or ``over_memory_budget``.
"""

from __future__ import annotations

import contextvars
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from dicom_io.errors import DecodeBudgetError, DicomError, PixelHeaderMismatch

MIB = 1 << 20
DEFAULT_MAX_SCAN_BYTES = 1024 * MIB
_MAX_SCAN_BYTES: contextvars.ContextVar[int] = contextvars.ContextVar("fetalhc_max_scan_bytes",
                                                                        default=DEFAULT_MAX_SCAN_BYTES)
# JPEG start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (T.81 Table B.1) and JPEG-LS SOF55 (0xF7).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
# Markers without a length field: TEM, RST0-7, SOI (T.81 B.1.1.2).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# What OpenJPEG holds for each tile of a codestream while decoding it (measured: about 5 KB; rounded up).
J2K_TILE_BYTES = 8 * 1024
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


@dataclass(frozen=True)
class FrameGeometry:
    """The size of one frame: ``rows`` x ``columns`` pixels of ``samples`` components of ``bits`` bits."""

    rows: int
    columns: int
    samples: int
    bits: int


# -- the memory budget -------------------------------------------------------------------------------------

@contextmanager
def scan_budget(max_mb: float) -> Iterator[None]:
    """Inside the block, a scan whose decoding needs more than ``max_mb`` MiB is refused (``over_memory_budget``).

    Example:
        >>> with scan_budget(512):
        ...     plan, scans = open_scans(path)  # doctest: +SKIP
    """
    token = _MAX_SCAN_BYTES.set(int(max_mb * MIB))
    try:
        yield
    finally:
        _MAX_SCAN_BYTES.reset(token)


def current_budget() -> int:
    """The bytes one scan's decoding may hold at once here (``scan_budget``, else 1024 MiB)."""
    return _MAX_SCAN_BYTES.get()


def check_budget(needed: int, what: str, budget: int | None = None) -> None:
    """Raise ``DecodeBudgetError`` when ``needed`` bytes exceed ``budget`` (default: ``current_budget()``)."""
    budget = current_budget() if budget is None else budget
    if needed > budget:
        raise DecodeBudgetError(f"decoding needs {needed / MIB:.0f} MiB ({what}); the limit is {budget / MIB:.0f} MiB "
                                "(FETALHC_MAX_SCAN_MB)", reason="over_memory_budget")


# -- frame headers -----------------------------------------------------------------------------------------

def jpeg_geometry(data: bytes) -> FrameGeometry | None:
    """The frame header (SOFn, or JPEG-LS SOF55) of a JPEG/JPEG-LS frame; None when there is none before a scan."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                return None
            precision, rows, columns, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            return FrameGeometry(rows, columns, components, precision)
        if marker in (0xDA, 0xD9):  # start of scan or end of image, and no frame header yet
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        i += 2 + length
    return None


def _j2k_codestream_start(data: bytes) -> int | None:
    """Where the codestream starts: 0 for a raw codestream, after the ``jp2c`` box header in a JP2 file."""
    if data[:4] == _J2K_SOC_SIZ[:4]:
        return 0
    if not data.startswith(_JP2_SIGNATURE):
        return None
    i, n = 0, len(data)
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if length == 1:  # XLBox: a 64-bit length follows
            if i + 16 > n:
                return None
            (length,) = struct.unpack(">Q", data[i + 8 : i + 16])
            header = 16
        if kind == b"jp2c":
            return i + header
        if length == 0 or length < header:  # "to the end of the file" for a box other than the codestream
            return None
        i += length
    return None


def j2k_tiles(data: bytes) -> int | None:
    """How many tiles the SIZ marker segment of a JPEG 2000 frame divides its image into; None when there is no
    readable SIZ, 0 when a tile size is 0 (malformed)."""
    start = _j2k_codestream_start(data)
    if start is None or data[start : start + 4] != _J2K_SOC_SIZ:
        return None
    siz = data[start + 4 :]
    if len(siz) < 36:
        return None
    xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack(">IIIIIIII", siz[4:36])
    if xtsiz == 0 or ytsiz == 0 or xtosiz > xosiz or ytosiz > yosiz:
        return 0
    return -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)


def j2k_geometry(data: bytes) -> FrameGeometry | None:
    """The image size in the SIZ marker segment of a JPEG 2000 frame; None when there is none."""
    start = _j2k_codestream_start(data)
    if start is None or data[start : start + 4] != _J2K_SOC_SIZ:
        return None
    siz = data[start + 4 :]
    if len(siz) < 38:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", siz[4:20])
    (components,) = struct.unpack(">H", siz[36:38])
    if len(siz) < 38 + 3 * components or xosiz > xsiz or yosiz > ysiz:
        return None
    bits = max(((siz[38 + 3 * c] & 0x7F) + 1 for c in range(components)), default=0)
    return FrameGeometry(ysiz - yosiz, xsiz - xosiz, components, bits)


def check_frame(data: bytes, family: str, declared: FrameGeometry, number: int, budget: int | None = None) -> None:
    """Refuse frame ``number`` (1-based) unless its own header says the ``declared`` size.

    ``family``: ``jpeg`` (JPEG and JPEG-LS) or ``j2k``. Precision may be below Bits Allocated (12 of 16). A JPEG
    2000 frame's tiles (``J2K_TILE_BYTES`` each) and decoded size must fit in ``budget`` (default: the current one).

    Raises:
        PixelHeaderMismatch: a frame header with other dimensions, components or more bits.
        DecodeBudgetError: a JPEG 2000 frame in so many tiles that decoding it would pass the budget.
        DicomError: ``undecodable_pixels`` when the frame has no readable header (garbage: not decoded).
    """
    found = jpeg_geometry(data) if family == "jpeg" else j2k_geometry(data)
    marker = "SOF" if family == "jpeg" else "SIZ"
    if found is None:
        raise DicomError(f"frame {number} has no readable {marker} frame header before its data: not decoded",
                         reason="undecodable_pixels")
    if (found.rows, found.columns, found.samples) != (declared.rows, declared.columns, declared.samples) \
            or not 1 <= found.bits <= declared.bits:
        raise PixelHeaderMismatch(
            f"frame {number}'s {marker} header says {found.rows}x{found.columns} pixels, {found.samples} samples of "
            f"{found.bits} bits; the image header says {declared.rows}x{declared.columns}, {declared.samples} samples "
            f"in {declared.bits} bits: refused before decoding", reason="pixel_header_mismatch")
    if family == "j2k":
        tiles = j2k_tiles(data)
        if not tiles:
            raise DicomError(f"frame {number}'s SIZ marker segment has a tile size of 0: not decoded",
                             reason="undecodable_pixels")
        frame_bytes = declared.rows * declared.columns * declared.samples * max(declared.bits // 8, 1)
        check_budget(frame_bytes + tiles * J2K_TILE_BYTES, f"a JPEG 2000 frame in {tiles} tiles", budget)


# -- bounded inflate ---------------------------------------------------------------------------------------

class BoundedInflater:
    """Raw deflate (PS3.5 A.5: no zlib header) inflated from ``source`` in chunks, never more than asked for."""

    def __init__(self, source: BinaryIO, chunk_bytes: int = 64 * 1024) -> None:
        self._source = source
        self._chunk = chunk_bytes
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = b""
        self._input_done = False

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` inflated bytes (fewer only at the end of the stream).

        Raises:
            DicomError: ``corrupt_dicom`` when the stream is not valid deflate.
        """
        out = bytearray()
        try:
            while len(out) < limit and not self._inflater.eof:
                if not self._pending:
                    if self._input_done:
                        break
                    self._pending = self._source.read(self._chunk)
                    if not self._pending:
                        self._input_done = True
                        out += self._inflater.flush(limit - len(out))
                        break
                out += self._inflater.decompress(self._pending, limit - len(out))
                self._pending = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise DicomError(f"the deflated dataset is not valid deflate data ({exc})", reason="corrupt_dicom") from exc
        return bytes(out)

    def exhausted(self) -> bool:
        """True when the stream holds no more output (one byte is inflated to find out, then dropped)."""
        return not self.read(1)
