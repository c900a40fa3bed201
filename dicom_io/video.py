"""Cines stored as video: MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 transfer syntaxes, decoded with PyAV.

The encapsulated Pixel Data of these syntaxes holds one video elementary stream cut into fragments
(PS3.5 8.2.5-8.2.7), not one item a frame: the stream is joined and decoded in order, and only the
frames asked for are kept. Many scanners export cines this way; a frame is YBR_PARTIAL_420.

Bounded before decoding: the stream is read only up to ``max_stream_bytes``; FFmpeg probes it with
``max_pixels`` set to the header's (0028,0010) Rows x (0028,0011) Columns (plus a coding block), so a sequence header that
claims more allocates nothing; the stream's frame size is then compared with the header's
(``pixel_header_mismatch``), and the decoder keeps the same ``max_pixels`` for the frames after.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dicom_io.errors import DicomError, PixelHeaderMismatch

# Transfer syntax UID -> FFmpeg demuxer of its elementary stream (the ".1" UIDs are the fragmentable
# variants of PS3.5 2020 and later).
VIDEO_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.100": "mpegvideo", "1.2.840.10008.1.2.4.100.1": "mpegvideo",  # MPEG-2 MP@ML
    "1.2.840.10008.1.2.4.101": "mpegvideo", "1.2.840.10008.1.2.4.101.1": "mpegvideo",  # MPEG-2 MP@HL
    **{f"1.2.840.10008.1.2.4.{n}{suffix}": "h264" for n in range(102, 107) for suffix in ("", ".1")},  # H.264
    "1.2.840.10008.1.2.4.107": "hevc", "1.2.840.10008.1.2.4.108": "hevc",  # HEVC Main / Main 10
}
# A stream larger than this is refused before it is read (a cine of 2000 HD frames is far smaller).
MAX_STREAM_BYTES = 2 << 30


def is_video_syntax(uid: object) -> bool:
    """True for the MPEG-2, H.264 and HEVC transfer syntaxes."""
    return str(uid) in VIDEO_SYNTAXES


def read_stream(path: Path, offset: int, max_bytes: int = MAX_STREAM_BYTES) -> bytes:
    """The elementary stream: the encapsulated fragments after the Basic Offset Table, joined.

    ``offset`` is where the Pixel Data value starts (its first item), as ``read_header`` found it.
    """
    chunks, total = [], 0
    with open(path, "rb") as f:
        f.seek(offset)
        first = True
        while True:
            raw = f.read(8)
            if len(raw) < 8:
                raise DicomError(f"{path.name} is truncated inside the video stream", reason="truncated")
            group, elem, length = struct.unpack("<HHL", raw)
            if (group, elem) == (0xFFFE, 0xE0DD):
                break
            if (group, elem) != (0xFFFE, 0xE000):
                raise DicomError(f"{path.name}: encapsulated video is malformed at byte {f.tell() - 8}",
                                 reason="corrupt_dicom")
            data = f.read(length)
            if len(data) < length:
                raise DicomError(f"{path.name} is truncated inside the video stream", reason="truncated")
            if not first:  # the first item is the Basic Offset Table (empty for video)
                chunks.append(data)
                total += length
                if total > min(max_bytes, MAX_STREAM_BYTES):
                    raise DicomError(f"{path.name}: video stream over {min(max_bytes, MAX_STREAM_BYTES)} bytes",
                                     reason="absurd_dimensions")
            first = False
    return b"".join(chunks)


def iter_video_frames(path: Path, offset: int, transfer_syntax: str, indices: list[int],
                      shape: tuple[int, int] | None = None,
                      max_stream_bytes: int = MAX_STREAM_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the stream in order and yield (index, RGB uint8 array) for each 0-based index asked for.

    ``shape``: (rows, columns) from the header; the stream's frames must have that size.

    Raises:
        PixelHeaderMismatch: the stream's frames are not ``shape``.
        DicomError: ``unsupported_transfer_syntax`` when PyAV is missing, ``undecodable_pixels``
            when FFmpeg cannot decode the stream, ``corrupt_dicom`` when a frame asked for is not in it.
    """
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency; a trimmed install lacks it
        raise DicomError(f"{path.name}: video transfer syntax {transfer_syntax} needs PyAV (pip install av)",
                         reason="unsupported_transfer_syntax") from exc
    wanted = sorted(set(indices))
    if not wanted:
        return
    stream = read_stream(path, offset, max_stream_bytes)
    found = decoded = 0
    # Decoders check their coded size, rounded up to whole macroblocks/coding tree units (at most 64).
    limit = {"max_pixels": str((shape[0] + 64) * (shape[1] + 64))} if shape else {}
    try:
        with av.open(io.BytesIO(stream), format=VIDEO_SYNTAXES[transfer_syntax], stream_options=[limit]) as container:
            if not container.streams.video:
                raise DicomError(f"{path.name}: the pixel data holds no video stream", reason="undecodable_pixels")
            codec = container.streams.video[0].codec_context
            if not codec.width or not codec.height:
                raise DicomError(f"{path.name}: the video stream has no readable frame size",
                                 reason="undecodable_pixels")
            if shape is not None:
                _check_size(path, (codec.height, codec.width), shape, "stream")
                codec.options = limit
            for index, frame in enumerate(container.decode(video=0)):
                decoded = index + 1
                if shape is not None:
                    _check_size(path, (frame.height, frame.width), shape, f"frame {index + 1}")
                if index == wanted[found]:
                    yield index, frame.to_ndarray(format="rgb24")
                    found += 1
                    if found == len(wanted):
                        return
    except av.error.FFmpegError as exc:
        raise DicomError(f"{path.name}: the video stream cannot be decoded ({type(exc).__name__}: {exc})",
                         reason="undecodable_pixels") from exc
    raise DicomError(f"{path.name}: frame {wanted[found] + 1} is missing from the video stream ({decoded} frames "
                     "decoded)", reason="corrupt_dicom")


def _check_size(path: Path, found: tuple[int, int], declared: tuple[int, int], what: str) -> None:
    if found != declared:
        raise PixelHeaderMismatch(f"{path.name}: the video {what} is {found[0]}x{found[1]} pixels, the header says "
                                  f"{declared[0]}x{declared[1]}: refused before decoding",
                                  reason="pixel_header_mismatch")
