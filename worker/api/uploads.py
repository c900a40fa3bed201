"""One upload to measure: its parameters, the image decoded to grey pixels, the DICOM file it becomes."""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_io import ScanIdentity, stable_uid, write_us_image
from worker.api.messages import ApiError, Request

MAX_IMAGE_PIXELS = 4096 * 4096  # the DICOM reader's limit for one frame (dicom_io.reader.MAX_FRAME_PIXELS)
MIN_IMAGE_SIDE_PX = 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg"}


@dataclass(frozen=True)
class Upload:
    """A request body to measure: ``kind`` (dicom | png | jpeg), its bytes, and what came with it."""

    kind: str
    data: bytes
    spacing_mm: float | None
    ga_days: float | None
    store: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _number(query: dict[str, str], name: str, low: float, high: float, what: str) -> float | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value < high):
        raise ApiError(422, "bad_parameter", f"{name}={text[:40]!r}: give {what} between {low:g} and {high:g}")
    return value


def _flag(query: dict[str, str], name: str) -> bool:
    text = (query.get(name) or "0").lower()
    if text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ApiError(422, "bad_parameter", f"{name}={text[:20]!r}; give 1 or 0")
    return text in ("1", "true", "yes", "on")


def parse_upload(req: Request) -> Upload:
    """What to measure: the kind from the bytes themselves (then the content type), checked parameters."""
    data = req.body
    if not data:
        raise ApiError(422, "empty_upload", "the request has no body: POST the file's bytes "
                                            "(Content-Type application/dicom, image/png or image/jpeg)")
    content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if data.startswith(PNG_MAGIC):
        kind = "png"
    elif data.startswith(JPEG_MAGIC):
        kind = "jpeg"
    elif content_type in IMAGE_TYPES:
        raise ApiError(422, "unreadable_image", f"the body is not a {IMAGE_TYPES[content_type].upper()} image")
    else:
        kind = "dicom"
    spacing = _number(req.query, "spacing_mm", 0.0, 10.0, "millimetres per pixel")
    if kind != "dicom" and spacing is None:
        raise ApiError(422, "uncalibrated",
                       f"a {kind.upper()} image carries no millimetre scale: add spacing_mm=<millimetres per pixel> "
                       "to the URL (e.g. ?spacing_mm=0.15); DICOM files carry their own calibration")
    ga_days = _number(req.query, "ga_days", 0.0, 320.0, "the gestational age in days")
    return Upload(kind, data, spacing, ga_days, _flag(req.query, "store"))


def image_to_grey(data: bytes, kind: str) -> np.ndarray:
    """A PNG or JPEG as 8-bit grey pixels (rows, cols); 422 when it cannot be decoded or is too large."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            cols, rows = im.size
            if cols * rows > MAX_IMAGE_PIXELS or min(cols, rows) < MIN_IMAGE_SIDE_PX:
                raise ApiError(422, "unsupported_image", f"a {cols}x{rows} image cannot be measured: "
                               f"sides of {MIN_IMAGE_SIDE_PX} pixels or more, at most {MAX_IMAGE_PIXELS} pixels")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: stretch to 8 bits
                values = np.asarray(im, dtype=np.float64)
                top = float(values.max()) or 1.0
                return np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(422, "unreadable_image",
                       f"the {kind.upper()} image cannot be decoded ({type(exc).__name__})") from None


def write_dicom(upload: Upload, folder: Path) -> Path:
    """The upload as a DICOM file in ``folder``: as sent, or a PNG/JPEG wrapped with its given spacing.

    Wrapped images get UIDs derived from their bytes, so storing the same image twice keeps one row.
    """
    sha = upload.sha256
    path = folder / f"{sha[:40]}.dcm"
    if path.is_file():
        return path
    partial = folder / f".{sha[:40]}.{threading.get_ident()}.part"
    if upload.kind == "dicom":
        partial.write_bytes(upload.data)
    else:
        assert upload.spacing_mm is not None  # parse_upload refused an image without spacing
        identity = ScanIdentity(patient_id="", patient_name="", study_uid=stable_uid("fetalhc-api", sha, "study"),
                                series_uid=stable_uid("fetalhc-api", sha, "series"),
                                sop_uid=stable_uid("fetalhc-api", sha, "image"))
        write_us_image(partial, image_to_grey(upload.data, upload.kind), upload.spacing_mm, identity=identity,
                       regions=False, pixel_spacing=True)
    os.chmod(partial, 0o640)  # issue 13: an upload holds patient data, never world-readable
    os.replace(partial, path)
    return path
