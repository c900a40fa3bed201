"""Deflated Explicit VR Little Endian files (PS3.5 A.5) read with a bounded inflate, never ``zlib.decompress``.

pydicom inflates such a file whole before it looks at a single element, so 400 KB can become 400 MB
(or 4 GB). Here the header is inflated first, at most ``HEADER_BYTES``; then the pixel data only up to
what (0028,0010) Rows x (0028,0011) Columns x (0028,0002) Samples per Pixel x (0028,0100) Bits
Allocated x (0028,0008) Number of Frames need, plus ``TRAILER_BYTES``. More than that is a
``pixel_header_mismatch``; a declared size over the scan budget is ``over_memory_budget``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset as read_raw_dataset
from pydicom.tag import BaseTag

from dicom_io.bounds import MIB, BoundedInflater, check_budget
from dicom_io.errors import DicomError, PixelHeaderMismatch
from dicom_io.frames import PARSE_ERRORS, frame_count, number_attribute

# The header elements before (7FE0,0010) of a real instance are a few kilobytes; private groups and a
# long Sequence of Ultrasound Regions stay far below this.
HEADER_BYTES = 4 * MIB
# Elements after the pixel data (trailing padding, a digital signature) and the pixel element's header.
TRAILER_BYTES = 1 * MIB
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}


@dataclass(frozen=True)
class DeflatedHead:
    """The header of a deflated file (no pixel data) and how far into the inflated stream the pixels start."""

    dataset: Dataset
    inflated: bytes  # the inflated bytes read so far
    pixel_offset: int | None  # where the pixel data element starts in ``inflated``; None: there is none
    inflater: BoundedInflater


def _parse(data: bytes, name: str, until_pixels: bool) -> tuple[Dataset, int | None]:
    """Parse inflated bytes (explicit VR little endian); with ``until_pixels``, stop at the pixel data tag."""
    reached: list[int] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            reached.append(int(tag))
            return True
        return False

    fp = io.BytesIO(data)
    try:
        ds = read_raw_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                              stop_when=at_pixels if until_pixels else None)
    except PARSE_ERRORS as exc:
        raise DicomError(f"{name}: the deflated dataset cannot be parsed ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc
    return ds, (fp.tell() if reached else None)


def read_deflated_header(f: BinaryIO, meta: FileMetaDataset, name: str) -> DeflatedHead:
    """Inflate and parse the header of the deflated dataset that starts at ``f``'s position (after the file meta).

    Raises:
        DicomError: ``corrupt_dicom`` (not deflate, unparsable, a header over ``HEADER_BYTES``).
    """
    inflater = BoundedInflater(f)
    head = inflater.read(HEADER_BYTES)
    ds, pixel_offset = _parse(head, name, until_pixels=True)
    if pixel_offset is None and len(head) >= HEADER_BYTES:
        raise DicomError(f"{name}: the deflated header runs past {HEADER_BYTES // MIB} MiB without reaching the pixel "
                         "data", reason="corrupt_dicom")
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return DeflatedHead(ds, head, pixel_offset, inflater)


def declared_pixel_bytes(ds: Dataset) -> int:
    """Bytes the header's native pixel data needs: rows x columns x samples x bytes per sample x frames."""
    try:
        rows, cols = number_attribute(ds, "Rows", 0), number_attribute(ds, "Columns", 0)
        samples, bits = number_attribute(ds, "SamplesPerPixel", 1), number_attribute(ds, "BitsAllocated", 8)
        frames = frame_count(ds)
    except PARSE_ERRORS as exc:
        raise DicomError(f"image pixel attributes are unreadable ({exc})", reason="corrupt_dicom") from exc
    return max(rows, 0) * max(cols, 0) * max(samples, 0) * max((bits + 7) // 8, 0) * max(frames, 0)


def read_deflated(f: BinaryIO, meta: FileMetaDataset, name: str, budget: int | None = None) -> Dataset:
    """The whole deflated dataset (pixel data included), inflated no further than its header's dimensions need.

    Raises:
        DecodeBudgetError: the declared pixel data is over ``budget`` (default: the current scan budget).
        PixelHeaderMismatch: the stream inflates past what the header's dimensions need.
        DicomError: ``corrupt_dicom``.
    """
    head = read_deflated_header(f, meta, name)
    if head.pixel_offset is None:
        return head.dataset
    needed = declared_pixel_bytes(head.dataset)
    check_budget(needed, "the deflated dataset inflated whole", budget)
    cap = head.pixel_offset + needed + TRAILER_BYTES
    buffer = io.BytesIO()
    buffer.write(head.inflated)
    while buffer.tell() < cap:
        chunk = head.inflater.read(min(cap - buffer.tell(), 4 * MIB))
        if not chunk:
            break
        buffer.write(chunk)
    if buffer.tell() > cap or (buffer.tell() == cap and not head.inflater.exhausted()):
        raise PixelHeaderMismatch(f"{name}: the deflated dataset inflates past the {cap} bytes its header's "
                                  f"{needed}-byte pixel data needs: refused before reading more",
                                  reason="pixel_header_mismatch")
    data = buffer.getvalue()
    del buffer
    ds, _ = _parse(data, name, until_pixels=False)
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return ds
