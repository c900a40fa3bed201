"""Reading an ultrasound DICOM file into ``Scan`` values: checks, grey conversion, calibration, crop.

Only the header is parsed up front (``stop_before_pixels``); the pixel data is checked by walking its
element and fragment headers, then decoded one frame at a time straight from the file, so a long cine
never sits decoded in memory; a cine without (0028,6010) Representative Frame Number may be sampled
(``dicom_io.frames.plan_frames``). Every failure is a ``DicomError`` with a short ``reason``:

``missing_file`` ``not_dicom`` ``truncated`` ``corrupt_dicom`` ``not_ultrasound`` ``no_pixel_data``
``absurd_dimensions`` ``unsupported_pixels`` ``doppler_only`` ``uncalibrated``
``unsupported_transfer_syntax`` ``undecodable_pixels`` ``no_such_frame``, and from the decoder bounds
(``dicom_io.bounds``, ``dicom_io.deflate``) ``pixel_header_mismatch`` ``over_memory_budget``.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom import uid as pdu
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info  # the file meta alone: no inflate of a deflated dataset

from dicom_io.bounds import FrameGeometry, check_budget, check_frame, current_budget
from dicom_io.calibration import resolve_calibrations
from dicom_io.deflate import read_deflated, read_deflated_header
from dicom_io.frames import PARSE_ERRORS, FramePlan, frame_count, number_attribute, plan_frames
from dicom_io.errors import DicomError, UnsupportedImageError
from dicom_io.scan import Calibration, Scan
from dicom_io.text import clean_text
from dicom_io.video import is_video_syntax, iter_video_frames

log = logging.getLogger(__name__)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
# Retired variants that old archives still hold.
US_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
ULTRASOUND_SOP_CLASSES = frozenset({
    US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE, US_IMAGE_STORAGE_RETIRED, US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
})
# Protects worker memory from absurd headers: at most 4096 x 4096 pixels a frame, 2000 frames,
# and at least MIN_SIDE_PX on each side (smaller cannot hold a measurable head).
MAX_FRAME_PIXELS = 4096 * 4096
MAX_SIDE_PX = 8192
MIN_SIDE_PX = 32
MAX_FRAMES = 2000
# Walking the fragments of encapsulated pixel data stops here (a cine has one or a few per frame).
MAX_FRAGMENTS = 100_000
# Header element values longer than this are not read while parsing (pydicom reads them from the file if they are
# ever used); the header's size is counted against the scan budget instead (``_check_decode_budget``).
DEFER_BYTES = 1 << 20

# Pinned decoder plugin per compressed transfer syntax (all from pylibjpeg, pinned in pyproject.toml):
# pylibjpeg-libjpeg (JPEG baseline/extended/lossless, JPEG-LS), pylibjpeg-openjpeg (JPEG 2000, HTJ2K),
# pylibjpeg-rle (RLE Lossless). No plugin reaches for the network.
DECODER_PLUGINS: dict[str, str] = {
    **{str(ts): "pylibjpeg" for ts in pdu.JPEGTransferSyntaxes},
    **{str(ts): "pylibjpeg" for ts in pdu.JPEGLSTransferSyntaxes},
    **{str(ts): "pylibjpeg" for ts in pdu.JPEG2000TransferSyntaxes},
    str(pdu.RLELossless): "pylibjpeg",
}
NATIVE_SYNTAXES = frozenset({
    str(pdu.ImplicitVRLittleEndian), str(pdu.ExplicitVRLittleEndian), str(pdu.ExplicitVRBigEndian),
    str(pdu.DeflatedExplicitVRLittleEndian),
})
# Bits of the (0008,0008) Image Type value 4 of US images (PS3.3 C.8.5.6.1.1), hexadecimal.
US_TYPE_2D = 0x0001
US_TYPE_DOPPLER_OR_M_MODE = 0x0002 | 0x0004 | 0x0008 | 0x0020  # M-mode, CW, PW, colour M-mode

PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"UC", b"UR", b"SQ", b"SV", b"UV"}


@dataclass(frozen=True)
class PixelDataInfo:
    """Where (7FE0,0010) Pixel Data lies in the file, found without reading it.

    ``offset``: byte offset of the value; ``length``: its length (None when undefined, i.e.
    encapsulated); ``fragments``: encapsulated items after the Basic Offset Table.
    """

    offset: int
    length: int | None
    fragments: int = 0


@dataclass(frozen=True)
class Header:
    """A parsed header (no pixel data), its transfer syntax and where its pixels are."""

    dataset: Dataset
    transfer_syntax: pdu.UID
    pixels: PixelDataInfo | None
    file_size: int


# -- parsing -----------------------------------------------------------------------------------------------

def _looks_like_raw_dataset(head: bytes) -> bool:
    """A DICOM dataset without the 128-byte preamble: starts with a group 0002 or 0008 tag."""
    if len(head) < 8:
        return False
    group_le, group_be = struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def read_dataset(path: str | Path, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM file, translating every parse failure into ``DicomError``.

    ``stop_before_pixels=False`` reads the pixel data into memory: only for small files and tools;
    the measuring path uses ``read_header`` and decodes frame by frame.
    """
    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        if stop_before_pixels:
            return _parse(f, path, size)
        meta = _deflated_meta(f, path)
        if meta is not None:
            return read_deflated(f, meta, path.name)
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DicomError(f"{path.name} is not a DICOM file (no DICM preamble): {exc}", reason="not_dicom") from exc
    except PARSE_ERRORS as exc:
        raise DicomError(f"{path.name} cannot be parsed as DICOM ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc


def read_sop_identity(source: str | Path | bytes) -> tuple[str, str]:
    """(0008,0016) SOP Class UID and (0008,0018) SOP Instance UID of a DICOM file (a path, or its bytes).

    Reads no further than group 0008 (``read_group_0008``), so a huge or hostile instance costs nothing here.

    Raises:
        DicomError: ``not_dicom``, ``corrupt_dicom``, ``truncated``.
    """
    ds = read_group_0008(source)
    return _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")


def read_group_0008(source: str | Path | bytes) -> Dataset:
    """The file meta and the elements up to group 0008 (UIDs, dates, modality) of a DICOM file (a path, or its
    bytes); a deflated file inflated at most ``dicom_io.deflate.HEADER_BYTES``, never whole.

    Raises:
        DicomError: ``not_dicom``, ``corrupt_dicom``, ``truncated``.
    """
    return _read_until_group(source, 0x0008)


def _read_until_group(source: str | Path | bytes, last_group: int) -> Dataset:
    """The file meta and the elements up to ``last_group`` (bounded as ``read_group_0008``)."""
    import io

    name = Path(source).name if not isinstance(source, bytes) else "data set"
    f: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    try:
        meta = _deflated_meta(f, Path(name))
        if meta is not None:
            return read_deflated_header(f, meta, name).dataset
        f.seek(0)
        head = f.read(132)
        f.seek(0)
        force = not (len(head) >= 132 and head[128:132] == b"DICM") and _looks_like_raw_dataset(head)
        return pydicom.filereader.read_partial(f, stop_when=lambda tag, vr, length: tag.group > last_group,
                                               defer_size=DEFER_BYTES, force=force)
    except InvalidDicomError as exc:
        raise DicomError(f"{name} is not a DICOM file: {exc}", reason="not_dicom") from exc
    except DicomError:
        raise
    except PARSE_ERRORS as exc:
        raise DicomError(f"{name} cannot be parsed as DICOM ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc
    finally:
        f.close()


def _check_file(path: Path) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DicomError(f"{path} does not exist", reason="missing_file") from exc
    except OSError as exc:
        raise DicomError(f"{path} cannot be read: {exc}", reason="missing_file") from exc
    if size == 0:
        raise DicomError(f"{path.name} is empty (0 bytes): not a DICOM file", reason="not_dicom")
    return size


def _parse(f: BinaryIO, path: Path, size: int) -> Dataset:
    """The dataset up to (not including) the pixel data; ``f`` is left at the pixel data tag."""
    head = f.read(132)
    f.seek(0)
    force = False
    if not (len(head) >= 132 and head[128:132] == b"DICM"):
        if not _looks_like_raw_dataset(head):
            raise DicomError(f"{path.name} is not a DICOM file: no 'DICM' prefix at byte 128 and no DICOM "
                             "tag at its start", reason="not_dicom")
        force = True  # an old file written without the preamble: parse the dataset that is there
    meta = None if force else _deflated_meta(f, path)
    if meta is not None:  # pydicom would inflate the whole file first: a bounded inflate instead
        return read_deflated_header(f, meta, path.name).dataset
    f.seek(0)
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=force, defer_size=DEFER_BYTES)
    except InvalidDicomError as exc:
        raise DicomError(f"{path.name} is not a DICOM file: {exc}", reason="not_dicom") from exc
    except PARSE_ERRORS as exc:
        where = f.tell() if not f.closed else size
        if isinstance(exc, EOFError) or where >= size:
            raise DicomError(f"{path.name} is truncated: the header ends at byte {size} inside an element "
                             f"({type(exc).__name__}: {exc}); fetch the file again", reason="truncated") from exc
        raise DicomError(f"{path.name} cannot be parsed as DICOM ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc
    if force and "SOPClassUID" not in ds and "Rows" not in ds:
        raise DicomError(f"{path.name} is not a DICOM file: no 'DICM' prefix and no image attributes",
                         reason="not_dicom")
    return ds


def _deflated_meta(f: BinaryIO, path: Path) -> FileMetaDataset | None:
    """The file meta of a deflated file (``f`` then at its dataset); None for any other transfer syntax."""
    try:
        f.seek(132)
        meta = _read_file_meta_info(f)
        ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    except PARSE_ERRORS:
        return None  # pydicom's own parse reports what is wrong with it
    return meta if ts == pdu.DeflatedExplicitVRLittleEndian else None


def _transfer_syntax(ds: Dataset) -> pdu.UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return pdu.UID(str(ts).strip("\x00 "))
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        return pdu.ImplicitVRLittleEndian
    return pdu.ExplicitVRLittleEndian if little in (True, None) else pdu.ExplicitVRBigEndian


def _last_element_short(ds: Dataset) -> bool:
    """The last top-level element holds fewer bytes than its length says (the file stops inside it)."""
    tags = list(ds.keys())
    if not tags:
        return False
    raw = ds._dict.get(tags[-1])  # a RawDataElement until first accessed: length and bytes as read
    length, value = getattr(raw, "length", None), getattr(raw, "value", None)
    return isinstance(length, int) and length != 0xFFFFFFFF and isinstance(value, bytes) and len(value) < length


def _locate_pixels(f: BinaryIO, ts: pdu.UID, path: Path, size: int) -> PixelDataInfo | None:
    """Read the pixel data element's header at ``f``'s position; walk fragments when encapsulated."""
    start = f.tell()
    little = ts.is_little_endian
    end = "<" if little else ">"
    tag_bytes = f.read(4)
    if len(tag_bytes) < 4:
        return None
    group, elem = struct.unpack(end + "HH", tag_bytes)
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return None
    if tag != 0x7FE00010:
        raise UnsupportedImageError(f"the instance holds {PIXEL_TAGS[tag]} (float pixels), not ultrasound "
                                    "(7FE0,0010) Pixel Data", reason="unsupported_pixels")
    if ts.is_implicit_VR:
        raw = f.read(4)
        header = 8
        if len(raw) < 4:
            raise DicomError(f"{path.name} is truncated inside the Pixel Data header", reason="truncated")
        (length,) = struct.unpack(end + "L", raw)
    else:
        vr = f.read(2)
        if vr in _LONG_VRS:
            f.read(2)
            raw, header, fmt = f.read(4), 12, "L"
        else:
            raw, header, fmt = f.read(2), 8, "H"
        if len(raw) < struct.calcsize("<" + fmt):
            raise DicomError(f"{path.name} is truncated inside the Pixel Data header", reason="truncated")
        (length,) = struct.unpack(end + fmt, raw)
    offset = start + header
    if length != 0xFFFFFFFF:
        if offset + length > size:
            raise DicomError(f"{path.name} is truncated: Pixel Data needs {length} bytes from byte {offset}, "
                             f"the file ends at {size}; fetch the file again", reason="truncated")
        return PixelDataInfo(offset, length)
    # Encapsulated (PS3.5 A.4): items (FFFE,E000) each with a 4-byte length, then (FFFE,E0DD).
    f.seek(offset)
    items = 0
    while items <= MAX_FRAGMENTS:
        raw = f.read(8)
        if len(raw) < 8:
            raise DicomError(f"{path.name} is truncated: the encapsulated Pixel Data stops after {items} items "
                             "without its Sequence Delimitation Item; fetch the file again", reason="truncated")
        group, elem, item_length = struct.unpack("<HHL", raw)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return PixelDataInfo(offset, None, max(items - 1, 0))
        if (group, elem) != (0xFFFE, 0xE000) or item_length == 0xFFFFFFFF:
            raise DicomError(f"{path.name}: encapsulated Pixel Data is malformed at byte {f.tell() - 8} "
                             f"(tag ({group:04X},{elem:04X}))", reason="corrupt_dicom")
        if f.tell() + item_length > size:
            raise DicomError(f"{path.name} is truncated inside pixel data fragment {items}; fetch the file "
                             "again", reason="truncated")
        f.seek(item_length, 1)
        items += 1
    raise UnsupportedImageError(f"{path.name}: more than {MAX_FRAGMENTS} pixel data fragments",
                                reason="absurd_dimensions")


def read_header(path: str | Path, max_scan_bytes: int | None = None) -> Header:
    """Parse the header of ``path`` and locate its pixel data without reading it.

    A deflated file is inflated here (bounded by its declared size and ``max_scan_bytes``, default the
    current ``dicom_io.bounds.scan_budget``).

    Raises:
        DicomError: reasons ``missing_file``, ``not_dicom``, ``truncated``, ``corrupt_dicom``,
            ``pixel_header_mismatch``, ``over_memory_budget``.
    """
    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        ds = _parse(f, path, size)
        try:
            ts = _transfer_syntax(ds)
        except PARSE_ERRORS as exc:
            raise DicomError(f"{path.name}: unreadable (0002,0010) Transfer Syntax UID ({exc})",
                             reason="corrupt_dicom") from exc
        try:
            ts.is_little_endian  # noqa: B018 - raises for a UID that is no transfer syntax pydicom knows
        except ValueError as exc:
            raise DicomError(f"{path.name}: (0002,0010) Transfer Syntax UID {str(ts)[:64]!r} is not a transfer "
                             "syntax fetalhc can read", reason="unsupported_transfer_syntax") from exc
        if ts == pdu.DeflatedExplicitVRLittleEndian:
            return _deflated_header(path, ts, size, max_scan_bytes)
        pixels = _locate_pixels(f, ts, path, size)
    if pixels is None and _last_element_short(ds):
        raise DicomError(f"{path.name} is truncated: its last element is cut short and there is no pixel data; "
                         "fetch the file again", reason="truncated")
    return Header(ds, ts, pixels, size)


def _deflated_header(path: Path, ts: pdu.UID, size: int, budget: int | None) -> Header:
    """Deflated files cannot be seeked into: inflated whole, but never past what their header declares."""
    with open(path, "rb") as f:
        meta = _deflated_meta(f, path)
        if meta is None:
            raise DicomError(f"{path.name}: the deflated file's meta information is unreadable", reason="corrupt_dicom")
        ds = read_deflated(f, meta, path.name, budget)
    return Header(ds, ts, PixelDataInfo(0, None) if "PixelData" in ds else None, size)


# -- checks ------------------------------------------------------------------------------------------------

def check_ultrasound(ds: Dataset, pixels: PixelDataInfo | None = None, located: bool = False) -> None:
    """Raise ``UnsupportedImageError`` unless ``ds`` is a B-mode ultrasound image with sane pixels.

    ``located``: ``pixels`` came from ``read_header`` (None then means no Pixel Data element).
    """
    sop_class = str(ds.get("SOPClassUID", "") or "").strip("\x00 ")
    modality = str(ds.get("Modality", "") or "")
    if sop_class not in ULTRASOUND_SOP_CLASSES:
        name = pdu.UID(sop_class).name if sop_class else "none"
        raise UnsupportedImageError(
            f"not an ultrasound image: SOP Class {name} (modality {modality or 'unknown'}); "
            "fetalhc measures US Image Storage and US Multi-frame Image Storage only",
            reason="not_ultrasound",
        )
    has_pixels = pixels is not None if located else ("PixelData" in ds)
    if not has_pixels:
        raise UnsupportedImageError("the instance has no (7FE0,0010) Pixel Data: nothing to measure",
                                    reason="no_pixel_data")
    try:
        rows, cols = number_attribute(ds, "Rows", 0), number_attribute(ds, "Columns", 0)
        frames = frame_count(ds)
        samples = number_attribute(ds, "SamplesPerPixel", 1)
        bits = number_attribute(ds, "BitsAllocated", 8)
        stored = number_attribute(ds, "BitsStored", bits)
    except PARSE_ERRORS as exc:
        raise DicomError(f"image pixel attributes are unreadable ({exc})", reason="corrupt_dicom") from exc
    if (not (MIN_SIDE_PX <= rows <= MAX_SIDE_PX and MIN_SIDE_PX <= cols <= MAX_SIDE_PX)
            or rows * cols > MAX_FRAME_PIXELS or not 1 <= frames <= MAX_FRAMES):
        raise UnsupportedImageError(
            f"absurd image dimensions {rows}x{cols} pixels x {frames} frames (limits: {MIN_SIDE_PX}..{MAX_SIDE_PX} "
            f"pixels a side, {MAX_FRAME_PIXELS} pixels a frame, {MAX_FRAMES} frames)", reason="absurd_dimensions",
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if samples not in (1, 3) or bits not in (8, 16) or not 1 <= stored <= bits:
        raise UnsupportedImageError(
            f"unsupported pixel layout: {samples} samples of {stored}/{bits} bits ({photometric or 'no photometric'}); "
            "fetalhc reads 8- or 16-bit grey, palette or colour images", reason="unsupported_pixels")
    if pixels is not None and pixels.length is not None:
        needed = rows * cols * samples * (bits // 8) * frames
        if photometric == "YBR_FULL_422":
            needed = needed * 2 // 3
        if pixels.length < needed:
            raise DicomError(f"Pixel Data holds {pixels.length} bytes, the header's {rows}x{cols}x{frames} frames "
                             f"need {needed}", reason="corrupt_dicom")
    if pixels is not None and pixels.length is None and 0 < pixels.fragments < frames and not _is_video(ds):
        raise DicomError(f"encapsulated Pixel Data holds {pixels.fragments} fragments for {frames} frames",
                         reason="corrupt_dicom")
    _check_image_type(ds)


def _is_video(ds: Dataset) -> bool:
    """An MPEG-2/H.264/HEVC cine: one stream in any number of fragments, not one fragment a frame."""
    meta = getattr(ds, "file_meta", None)
    return meta is not None and is_video_syntax(meta.get("TransferSyntaxUID", ""))


def _check_image_type(ds: Dataset) -> None:
    """Refuse a US image whose (0008,0008) Image Type value 4 says M-mode/Doppler without 2D imaging.

    Only used when the image has no (0018,6011) regions (regions, where present, decide).
    """
    if "SequenceOfUltrasoundRegions" in ds:
        return
    try:
        values = list(ds.get("ImageType", []) or [])
        mask = int(str(values[3]), 16) if len(values) > 3 else 0
    except (ValueError, TypeError, IndexError):
        return
    if mask and not mask & US_TYPE_2D and mask & US_TYPE_DOPPLER_OR_M_MODE:
        raise UnsupportedImageError(
            f"(0008,0008) Image Type value 4 '{values[3]}' marks an M-mode/Doppler image without 2-D imaging: "
            "there is no B-mode head to measure", reason="doppler_only")


# -- pixels ------------------------------------------------------------------------------------------------

def _is_little_endian(ds: Dataset) -> bool:
    try:
        return _transfer_syntax(ds).is_little_endian
    except PARSE_ERRORS:
        return True


def apply_palette(index: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB from PALETTE COLOR indices via (0028,1101-1103) descriptors and (0028,1201-1203) data.

    Unlike ``pydicom.pixels.apply_color_lut`` (pydicom 3.0), 16-bit LUT data of big-endian files is
    read big-endian. Segmented LUTs (0028,1221-1223) are left to pydicom, which handles their endianness.
    """
    if "SegmentedRedPaletteColorLookupTableData" in ds and "RedPaletteColorLookupTableData" not in ds:
        from pydicom.pixels import apply_color_lut

        return apply_color_lut(index, ds)
    channels = []
    for colour in ("Red", "Green", "Blue"):
        descriptor = ds[f"{colour}PaletteColorLookupTableDescriptor"].value
        data = ds[f"{colour}PaletteColorLookupTableData"].value
        entries = int(descriptor[0]) or 65536
        first = int(descriptor[1])
        width = len(data) // entries if entries else 0
        if width not in (1, 2):
            raise ValueError(f"{colour} palette holds {len(data)} bytes for {entries} entries")
        dtype = np.dtype("u1") if width == 1 else np.dtype("<u2" if _is_little_endian(ds) else ">u2")
        lut = np.frombuffer(data[: entries * width], dtype=dtype).astype(np.uint16)
        channels.append(lut[np.clip(index.astype(np.int64) - first, 0, entries - 1)])
    return np.stack(channels, axis=-1)


def _scale_to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float32) * (255.0 / max(top, 1.0))), 0, 255).astype(np.uint8)


def to_grey(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """One decoded frame as grey uint8 pixels (rows, cols).

    Colour (RGB; YBR_* which pydicom decodes to RGB; PALETTE COLOR through its LUT) becomes ITU-R BT.601
    luma. Grey: MONOCHROME1 is inverted; 8-bit grey is kept as is (so a written image reads back
    identical); deeper or signed grey is stretched from its frame minimum to maximum.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()
    if photometric == "PALETTE COLOR" and frame.ndim == 2:
        frame = apply_palette(frame, ds)
    if frame.ndim == 3:
        rgb = frame[..., :3].astype(np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if photometric == "PALETTE COLOR":
            top = 255.0 if frame.max() <= 255 else 65535.0
        elif frame.dtype == np.uint8:
            top = 255.0
        else:
            top = float((1 << number_attribute(ds, "BitsStored", 16)) - 1)
        return _scale_to_uint8(grey, top)
    if frame.ndim != 2:
        raise UnsupportedImageError(f"unexpected pixel array shape {frame.shape}", reason="unsupported_pixels")
    stored = number_attribute(ds, "BitsStored", 8)
    if frame.dtype == np.uint8 and stored <= 8:
        grey8 = frame
        if photometric == "MONOCHROME1":
            grey8 = ((1 << stored) - 1 - frame.astype(np.int16)).clip(0, 255).astype(np.uint8)
        return grey8
    values = frame.astype(np.float64)
    if photometric == "MONOCHROME1":
        values = -values
    low, high = float(values.min()), float(values.max())
    return _scale_to_uint8(values - low, high - low)


def _decode_error(exc: BaseException, ts: pdu.UID, path: Path) -> DicomError:
    name = ts.name if ts.is_valid else str(ts)
    if isinstance(exc, NotImplementedError) or (str(ts) not in DECODER_PLUGINS and str(ts) not in NATIVE_SYNTAXES):
        return DicomError(f"{path.name}: transfer syntax {name} cannot be decoded by fetalhc's pinned plugins "
                          f"({exc}); convert it to an uncompressed, JPEG/JPEG-LS/JPEG 2000/RLE or "
                          "MPEG-2/H.264/HEVC syntax",
                          reason="unsupported_transfer_syntax")
    return DicomError(f"{path.name}: pixel data cannot be decoded (transfer syntax {name}, "
                      f"{type(exc).__name__}: {exc})", reason="undecodable_pixels")


def _codestream_family(ts: pdu.UID) -> str | None:
    """``jpeg`` (JPEG, JPEG-LS), ``j2k`` (JPEG 2000, HTJ2K): syntaxes whose frames carry their own size header."""
    if ts in pdu.JPEGTransferSyntaxes or ts in pdu.JPEGLSTransferSyntaxes:
        return "jpeg"
    if ts in pdu.JPEG2000TransferSyntaxes or str(ts).startswith("1.2.840.10008.1.2.4.20"):  # .201-.203: HTJ2K
        return "j2k"
    return None


def declared_geometry(ds: Dataset) -> FrameGeometry:
    """One frame as the header declares it: (0028,0010) Rows, (0028,0011) Columns, (0028,0002) Samples per
    Pixel, (0028,0100) Bits Allocated."""
    return FrameGeometry(number_attribute(ds, "Rows", 0), number_attribute(ds, "Columns", 0),
                         number_attribute(ds, "SamplesPerPixel", 1), number_attribute(ds, "BitsAllocated", 8))


def _frame_headers(path: Path, header: Header, family: str) -> Iterator[bytes]:
    """The encapsulated frames as pydicom groups them (Basic/Extended Offset Table, else fragments)."""
    from pydicom.encaps import generate_frames

    ds = header.dataset
    assert header.pixels is not None
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    with open(path, "rb") as f:
        f.seek(header.pixels.offset)
        yield from generate_frames(f, number_of_frames=frame_count(ds), extended_offsets=extended)


def iter_frames(path: str | Path, header: Header, indices: list[int],
                max_scan_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the 0-based frames ``indices`` one at a time, reading only their bytes from the file.

    Yields (index, array) in ascending index order; arrays are as pydicom returns them (YBR converted to RGB).
    A compressed frame's own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) is checked against the
    image header before that frame is decoded (``dicom_io.bounds``), and a video stream's frame size
    before its first frame: a mismatch is ``pixel_header_mismatch``.
    """
    from pydicom.pixels import iter_pixels

    path = Path(path)
    ts = header.transfer_syntax
    wanted = sorted(set(indices))
    try:
        declared = declared_geometry(header.dataset)
    except PARSE_ERRORS as exc:
        raise DicomError(f"{path.name}: image pixel attributes are unreadable ({exc})", reason="corrupt_dicom") from exc
    if is_video_syntax(ts) and header.pixels is not None:
        yield from iter_video_frames(path, header.pixels.offset, str(ts), wanted,
                                     shape=(declared.rows, declared.columns),
                                     max_stream_bytes=current_budget() if max_scan_bytes is None else max_scan_bytes)
        return
    if str(ts) not in DECODER_PLUGINS and str(ts) not in NATIVE_SYNTAXES:
        raise _decode_error(NotImplementedError("no decoder"), ts, path)
    kwargs: dict[str, object] = {"transfer_syntax_uid": ts}
    if str(ts) in DECODER_PLUGINS:
        kwargs["decoding_plugin"] = DECODER_PLUGINS[str(ts)]
    source: str | Dataset = str(path) if ts != pdu.DeflatedExplicitVRLittleEndian else header.dataset
    if isinstance(source, Dataset):
        kwargs.pop("transfer_syntax_uid")
    family = _codestream_family(ts)
    encapsulated = header.pixels is not None and header.pixels.length is None
    raw = _frame_headers(path, header, family) if family and encapsulated else None
    position = 0
    frames = iter_pixels(source, indices=wanted, **kwargs)  # type: ignore[arg-type]
    for index in wanted:
        try:
            if raw is not None and family is not None:
                data = b""
                while position <= index:
                    data = next(raw)
                    position += 1
                check_frame(data, family, declared, index + 1, max_scan_bytes)
            array = next(frames)
        except StopIteration:
            raise DicomError(f"{path.name}: frame {index + 1} is missing from the pixel data",
                             reason="corrupt_dicom") from None
        except DicomError:
            raise
        except PARSE_ERRORS as exc:
            raise _decode_error(exc, ts, path) from exc
        yield index, array


def read_frame(path: str | Path, ds: Dataset | Header, index: int) -> np.ndarray:
    """Decode one frame (0-based) without decoding the whole cine."""
    header = ds if isinstance(ds, Header) else read_header(path)
    for _, array in iter_frames(path, header, [index]):
        return array
    raise DicomError(f"frame {index + 1} is missing", reason="corrupt_dicom")


# -- scans -------------------------------------------------------------------------------------------------

def parse_date(value: object) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date, None when absent or malformed."""
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if text else None
    except ValueError:
        log.info("ignoring malformed DICOM date")
        return None


def _text(ds: Dataset, keyword: str, cleaned: list[str] | None = None) -> str:
    """A text attribute without padding or control characters (``dicom_io.text``); ``cleaned`` gets the keyword
    when control characters were removed."""
    try:
        text, changed = clean_text(ds.get(keyword, "") or "")
    except PARSE_ERRORS:
        return ""
    if changed and cleaned is not None:
        cleaned.append(keyword)
    return text


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    try:
        return parse_date(ds.get(keyword))
    except PARSE_ERRORS:
        return None


def _identity(ds: Dataset) -> dict[str, object]:
    """Identity attributes copied to every Scan (each read defensively: bad values become blank)."""
    cleaned: list[str] = []
    identity: dict[str, object] = {
        keyword: _text(ds, name, cleaned) for keyword, name in (
            ("sop_instance_uid", "SOPInstanceUID"), ("sop_class_uid", "SOPClassUID"),
            ("series_instance_uid", "SeriesInstanceUID"), ("study_instance_uid", "StudyInstanceUID"),
            ("accession_number", "AccessionNumber"), ("patient_id", "PatientID"),
            ("issuer_of_patient_id", "IssuerOfPatientID"), ("manufacturer", "Manufacturer"))}
    identity.update({"study_date": _date(ds, "StudyDate"), "last_menstrual_date": _date(ds, "LastMenstrualDate"),
                     "patient_birth_date": _date(ds, "PatientBirthDate"), "text_cleaned": bool(cleaned)})
    if cleaned:
        log.info("control characters removed from %s at read time", ", ".join(cleaned))
    return identity


@dataclass(frozen=True)
class InstanceIdentity:
    """Who and what an instance is, read with a bounded header parse: its UIDs, its patient, its pixels.

    ``pixel_digest``: SHA-256 of the file from its pixel data element to its end (a deflated file, or one without
    pixel data: of the whole file), so two copies of an instance can be told apart by their pixels alone.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: dt.date | None
    pixel_digest: str


def read_instance_identity(source: str | Path | bytes, pixels: bool = False) -> InstanceIdentity:
    """The ``InstanceIdentity`` of a DICOM file (a path, or its bytes), from its elements up to group 0020 (UIDs,
    patient, study): a deflated header is inflated no further than ``dicom_io.deflate.HEADER_BYTES``, long values
    are not read, and what comes later (a report's content tree, however deep) is not parsed for it.
    ``pixels``: also digest the pixel data (the rest of the header parsed to find it, the file read to its end;
    a header that cannot be parsed: the whole file); else ``pixel_digest`` is empty.

    Raises:
        DicomError: ``missing_file``, ``not_dicom``, ``truncated``, ``corrupt_dicom``.
    """
    import hashlib
    import io

    if isinstance(source, bytes):
        if not source:
            raise DicomError("an empty data set is not DICOM", reason="not_dicom")
        path, size = Path("data set"), len(source)
    else:
        path = Path(source)
        size = _check_file(path)
    ds = _read_until_group(source, 0x0020)
    digest = hashlib.sha256()
    if pixels:
        f: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(path, "rb")
        try:
            try:
                head = _parse(f, path, size)
                meta = getattr(head, "file_meta", None)
                deflated = str(getattr(meta, "TransferSyntaxUID", "") or "").strip("\x00 ") == \
                    pdu.DeflatedExplicitVRLittleEndian
                start = 0 if deflated or f.tell() >= size else f.tell()
            except DicomError:
                start = 0  # the header cannot be parsed to its pixel data: the whole file
            f.seek(start)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        finally:
            f.close()
    return InstanceIdentity(_text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID"), _text(ds, "StudyInstanceUID"),
                            _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID"), _date(ds, "PatientBirthDate"),
                            digest.hexdigest() if pixels else "")


def _check_decode_budget(header: Header, budget: int) -> None:
    """Refuse a scan whose decoding would hold more than ``budget`` bytes at once, from its declared size.

    Held at once: one decoded frame, plus the whole stream of a video cine (the file's bytes after
    the pixel data starts), plus the header before the pixel data (its long values are not read while parsing,
    ``DEFER_BYTES``, but any code that uses one would); a deflated dataset was checked whole when it was inflated.
    """
    ds = header.dataset
    geometry = declared_geometry(ds)
    frame_bytes = geometry.rows * geometry.columns * geometry.samples * max(geometry.bits // 8, 1)
    stream = 0
    if is_video_syntax(header.transfer_syntax) and header.pixels is not None:
        stream = max(header.file_size - header.pixels.offset, 0)
    head = header.pixels.offset if header.pixels is not None else 0
    check_budget(frame_bytes + stream + head, f"{geometry.rows}x{geometry.columns}x{geometry.samples} frame"
                 + (f" and a {stream / (1 << 20):.0f} MiB video stream" if stream else "")
                 + (f" after a {head / (1 << 20):.0f} MiB header" if head >= 1 << 20 else ""), budget)


# What ``_prepare`` read and checked of a file: its header, calibrations, rows, columns and frame count.
Prepared = tuple[Header, list[Calibration], int, int, int]


def _prepare(path: Path, budget: int) -> Prepared:
    header = read_header(path, budget)
    ds = header.dataset
    try:
        check_ultrasound(ds, header.pixels, located=True)
        _check_decode_budget(header, budget)
        rows, cols, total = number_attribute(ds, "Rows", 0), number_attribute(ds, "Columns", 0), frame_count(ds)
        calibrations = resolve_calibrations(ds, rows, cols)
    except DicomError:
        raise
    except PARSE_ERRORS as exc:
        raise DicomError(f"{path.name}: header attributes are unreadable ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc
    return header, calibrations, rows, cols, total


def open_scans(path: str | Path, frames: list[int] | None = None, max_frames: int = 0,
               max_scan_bytes: int | None = None) -> tuple[FramePlan, Iterator[Scan]]:
    """Check ``path`` and plan its frames now; return the plan and a lazy iterator of its ``Scan`` values.

    Frames: see ``plan_frames`` (``frames`` asked for, else the representative frame, else every frame
    or, over ``max_frames``, an evenly spaced sample). Only the planned frames are decoded, one at a
    time. Regions: every usable 2-D tissue region (largest first), each Scan cropped to its region
    with ``calibration.region`` saying which; with Pixel Spacing only, the whole frame. The caller
    measures each and keeps the best by quality: that picks the frame and the region holding the head.
    ``max_scan_bytes``: the most memory decoding may hold at once (default: the current
    ``dicom_io.bounds.scan_budget``, ``FETALHC_MAX_SCAN_MB`` in a worker).

    Raises:
        DicomError (or a subclass): the file cannot be read, is not a measurable ultrasound image, or
        is uncalibrated (see the module docstring for the reasons); decoding errors come from the iterator.
    """
    path = Path(path)
    budget = current_budget() if max_scan_bytes is None else max_scan_bytes
    return open_prepared(path, _prepare(path, budget), budget, frames, max_frames)


def open_prepared(path: Path, prepared: Prepared, budget: int, frames: list[int] | None = None,
                  max_frames: int = 0) -> tuple[FramePlan, Iterator[Scan]]:
    """``open_scans`` of a file whose header ``_prepare`` has already read and checked (read once)."""
    header, calibrations, rows, cols, total = prepared
    bad = [n for n in frames or [] if not 1 <= n <= total]
    if bad:
        raise DicomError(f"{path.name} has {total} frame(s); frame(s) {bad} do not exist", reason="no_such_frame")
    plan, identity = planned(path, header.dataset, max_frames, frames)
    return plan, _generate_scans(path, header, calibrations, plan, identity, (rows, cols), budget)


def planned(path: Path, ds: Dataset, max_frames: int = 0, frames: list[int] | None = None,
            ) -> tuple[FramePlan, dict[str, object]]:
    """The frames to measure (``plan_frames``) and the instance's identity, which needs a SOP Instance UID."""
    plan = plan_frames(ds, max_frames, frames)
    identity = _identity(ds)
    if not identity["sop_instance_uid"]:
        raise DicomError(f"{path.name} has no (0008,0018) SOP Instance UID", reason="corrupt_dicom")
    return plan, identity


def _generate_scans(path: Path, header: Header, calibrations: list[Calibration], plan: FramePlan,
                    identity: dict[str, object], shape: tuple[int, int], budget: int) -> Iterator[Scan]:
    """The Scans of ``plan``'s frames (checked header, resolved calibrations), decoded one frame at a time."""
    ds = header.dataset
    rows, cols = shape
    for index, array in iter_frames(path, header, [n - 1 for n in plan.frames], budget):
        try:
            grey = to_grey(array, ds)
        except DicomError:
            raise
        except PARSE_ERRORS as exc:
            raise DicomError(f"{path.name}: frame {index + 1} cannot be converted to grey ({exc})",
                             reason="undecodable_pixels") from exc
        if grey.shape != (rows, cols):
            raise DicomError(f"decoded frame is {grey.shape}, header says {rows}x{cols}", reason="corrupt_dicom")
        for calibration in calibrations:
            crop, origin = grey, (0, 0)
            if calibration.region is not None:
                x0, y0, x1, y1 = calibration.region
                crop, origin = grey[y0 : y1 + 1, x0 : x1 + 1], (x0, y0)
            try:
                scan = Scan(pixels=np.ascontiguousarray(crop), calibration=calibration, frame=index + 1,
                            frames_in_instance=plan.total, origin_xy=origin, **identity)  # type: ignore[arg-type]
            except ValueError as exc:
                raise UnsupportedImageError(f"cannot measure this image: {exc}", reason="unsupported_image") from exc
            yield scan


def iter_scans(path: str | Path, frames: list[int] | None = None, max_frames: int = 0) -> Iterator[Scan]:
    """Yield one ``Scan`` per (frame, usable region), reading and decoding one frame at a time.

    Lazy: nothing is read before the first ``next``. Frames and regions as in ``open_scans``; with the
    default ``max_frames=0`` a cine without a representative frame yields every frame.
    """
    _, scans = open_scans(path, frames, max_frames)
    yield from scans


def read_scan(path: str | Path, frame: int | None = None) -> Scan:
    """The first Scan to measure of ``path`` (or of the 1-based ``frame`` asked for)."""
    return next(iter_scans(path, [frame] if frame else None))
