"""Decompression bombs built on the spot: small files whose pixel data claims far more than their header says.

Each writes a real DICOM file: a 480 x 640 US image whose compressed frame header (JPEG SOF, JPEG-LS
SOF55, JPEG 2000 SIZ) claims 30000 x 30000 pixels, a deflated dataset that inflates to 400 MB, a
header whose declared size is over any budget, and an H.264 cine whose stream is larger than its
header says. ``peak_rss`` reads a file in a fresh interpreter and reports its reason and peak memory.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_io.writer import build_us_dataset, write_us_image

REPO = Path(__file__).resolve().parents[2]
ROWS, COLS = 480, 640
CLAIMED = 30000
SPACING_MM = 0.15


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (ROWS, COLS), dtype=np.uint8)


def _patch(path: Path, marker: bytes, offset: int, fmt: str, values: tuple[int, ...]) -> Path:
    """Overwrite ``values`` (struct ``fmt``) ``offset`` bytes after the first ``marker`` in the file."""
    data = bytearray(path.read_bytes())
    at = data.index(marker) + offset
    data[at : at + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(data))
    return path


def jpeg_bomb(path: Path) -> Path:
    """JPEG baseline whose SOF0 says 30000 x 30000 (precision 1 byte, then rows, columns)."""
    write_us_image(path, _image(), SPACING_MM, encoding="jpeg_baseline")
    return _patch(path, b"\xff\xc0", 5, ">HH", (CLAIMED, CLAIMED))


def jpeg_ls_bomb(path: Path) -> Path:
    """JPEG-LS whose SOF55 says 30000 x 30000."""
    write_us_image(path, _image(), SPACING_MM, encoding="jpeg_ls")
    return _patch(path, b"\xff\xf7", 5, ">HH", (CLAIMED, CLAIMED))


def j2k_bomb(path: Path) -> Path:
    """JPEG 2000 whose SIZ says an image and tile of 30000 x 30000 (Xsiz, Ysiz, offsets, XTsiz, YTsiz)."""
    write_us_image(path, _image(), SPACING_MM, encoding="jpeg2000")
    return _patch(path, b"\xff\x4f\xff\x51", 8, ">IIIIII", (CLAIMED, CLAIMED, 0, 0, CLAIMED, CLAIMED))


def deflate_bomb(path: Path, inflated_mb: int = 400) -> Path:
    """A deflated file (a few hundred KB) whose 480 x 640 header is followed by ``inflated_mb`` MB of pixel data.

    Written as a stream: neither the test nor this builder holds the inflated bytes.
    """
    ds = build_us_dataset(_image(), SPACING_MM)
    del ds.PixelData
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_dataset(head, ds)
    pixel_bytes = inflated_mb * (1 << 20)
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes)
    meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(f, meta)  # type: ignore[arg-type]
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        f.write(deflater.compress(head.getvalue() + element))
        zeros = bytes(1 << 20)
        for _ in range(inflated_mb):
            f.write(deflater.compress(zeros))
        f.write(deflater.flush())
    return path


def declared_giant(path: Path) -> Path:
    """An honest-looking deflated header that declares 2000 frames of 4096 x 4096 RGB 16-bit (200 GB)."""
    ds = build_us_dataset(np.zeros((64, 64), np.uint8), SPACING_MM)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4096, 4096, 3, "RGB"
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 16, 15
    ds.NumberOfFrames = 2000
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.PixelData = bytes(1024)
    ds.save_as(path, enforce_file_format=True)
    return path


def video_bomb(path: Path, side: int = 2048) -> Path:
    """An H.264 cine whose stream is ``side`` x ``side`` while its header says 480 x 640."""
    frames = np.zeros((2, side, side), np.uint8)
    write_us_image(path, frames, SPACING_MM, encoding="h264", regions=False, pixel_spacing=True)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = ROWS, COLS
    ds.save_as(path)
    return path


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


# VmHWM: this interpreter's own peak resident memory (ru_maxrss keeps the forking parent's across exec on Linux).
_PEAK_MB = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]) / 1024"

_READ = """
import json, sys
from dicom_io import DicomError, iter_scans
reason = None
try:
    for _ in iter_scans(sys.argv[1]):
        pass
except DicomError as exc:
    reason = exc.reason
""" + "print(json.dumps({'reason': reason, 'peak_mb': " + _PEAK_MB + "}))\n"


def peak_rss(path: Path | None, timeout_s: float = 120) -> dict[str, object]:
    """Read ``path`` with ``iter_scans`` in a fresh interpreter: {"reason": str | None, "peak_mb": float}.

    ``path`` None imports the reader only (the baseline). A cap on the address space (6 GiB) makes a
    regression that allocates what a bomb claims fail here rather than swap a small machine.
    """
    code = _READ if path is not None else (
        "import json\nimport dicom_io.reader, av\n"
        "print(json.dumps({'reason': None, 'peak_mb': " + _PEAK_MB + "}))")
    argv = [sys.executable, "-c", code] + ([str(path)] if path is not None else [])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, preexec_fn=_cap_memory)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
