"""Writing grey images as US Image Storage files the way scanners do (region calibration in cm)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from pydicom import uid as pdu
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from dicom_io.reader import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE

# A fixed root for UIDs derived from names (pydicom's prefix + "fetalhc" digits): stable per input.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def stable_uid(*parts: str) -> str:
    """A valid UID derived deterministically from ``parts`` (same input, same UID)."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[digest])


@dataclass(frozen=True)
class ScanIdentity:
    """Patient, study and dating attributes to write into a generated file."""

    patient_id: str = "ANON"
    patient_name: str = "Anonymous^Fetus"
    study_date: dt.date | None = None
    last_menstrual_date: dt.date | None = None
    accession_number: str = ""
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None


class Encoding(str, Enum):
    """How the pixel data of a written file is encoded (its transfer syntax)."""

    EXPLICIT_LE = "explicit_le"  # Explicit VR Little Endian, uncompressed
    RLE = "rle"  # RLE Lossless (pydicom's own encoder)
    JPEG_BASELINE = "jpeg_baseline"  # JPEG Baseline (Process 1), YBR_FULL_422, lossy (Pillow)
    JPEG_LS = "jpeg_ls"  # JPEG-LS Lossless (pyjpegls)
    JPEG2000 = "jpeg2000"  # JPEG 2000 Lossless (pylibjpeg-openjpeg)
    H264 = "h264"  # MPEG-4 AVC/H.264 High Profile / Level 4.1, YBR_PARTIAL_420, lossy (PyAV, libx264)


# JPEG baseline as scanners write it: quality ~95, chroma subsampled 4:2:2 (Pillow's subsampling=1).
JPEG_QUALITY = 95


def ultrasound_region(bounds: tuple[int, int, int, int], spacing_mm_x: float, spacing_mm_y: float,
                      reference_pixel: tuple[int, int] | None = None) -> Dataset:
    """One (0018,6011) item: a 2-D tissue region in cm with the given pixel bounds (inclusive).

    ``reference_pixel``: (0018,6020)/(0018,6022) Reference Pixel X0/Y0 relative to the region's
    top-left corner (for a sector: its apex, physical position 0 cm); top centre by default.
    """
    x0, y0, x1, y1 = bounds
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = x0
    region.RegionLocationMinY0 = y0
    region.RegionLocationMaxX1 = x1
    region.RegionLocationMaxY1 = y1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = spacing_mm_x / 10.0
    region.PhysicalDeltaY = spacing_mm_y / 10.0
    ref_x, ref_y = reference_pixel if reference_pixel is not None else ((x1 - x0) // 2, 0)
    region.ReferencePixelX0 = int(ref_x)
    region.ReferencePixelY0 = int(ref_y)
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    return region


def build_us_dataset(
    image: np.ndarray, spacing_mm_x: float, spacing_mm_y: float | None = None,
    identity: ScanIdentity | None = None, region_bounds: tuple[int, int, int, int] | None = None,
    pixel_spacing: bool = False, regions: bool = True, reference_pixel: tuple[int, int] | None = None,
    representative_frame: int | None = None,
) -> Dataset:
    """An uncompressed US Image Storage dataset (MONOCHROME2, 8-bit) holding ``image``.

    Args:
        image: grey uint8 pixels (rows, cols); or (frames, rows, cols) for US Multi-frame Image Storage.
        spacing_mm_x, spacing_mm_y: millimetres per pixel (y defaults to x).
        region_bounds: (x0, y0, x1, y1) of the calibrated region; the whole image by default.
        pixel_spacing: also write (0028,0030) Pixel Spacing; ``regions=False`` omits (0018,6011).
        reference_pixel: the region's reference pixel (see ``ultrasound_region``).
        representative_frame: (0028,6010) Representative Frame Number (1-based) of a multi-frame image.
    """
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError("build_us_dataset expects uint8 grey pixels, (rows, cols) or (frames, rows, cols)")
    spacing_mm_y = spacing_mm_x if spacing_mm_y is None else spacing_mm_y
    ident = identity or ScanIdentity()
    multiframe = image.ndim == 3
    rows, cols = image.shape[-2:]
    sop_class = US_MULTIFRAME_IMAGE_STORAGE if multiframe else US_IMAGE_STORAGE
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ident.sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ident.study_uid or generate_uid()
    ds.SeriesInstanceUID = ident.series_uid or generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "fetalhc"
    ds.PatientID = ident.patient_id
    ds.PatientName = ident.patient_name
    ds.AccessionNumber = ident.accession_number
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if ident.study_date:
        ds.StudyDate = ident.study_date.strftime("%Y%m%d")
        ds.ContentDate = ds.StudyDate
    if ident.last_menstrual_date:
        ds.LastMenstrualDate = ident.last_menstrual_date.strftime("%Y%m%d")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image).tobytes()
    if multiframe:
        ds.NumberOfFrames = image.shape[0]
        ds.FrameTime = 40.0  # ms between frames (25 Hz)
        ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
        if representative_frame is not None:
            ds.RepresentativeFrameNumber = representative_frame
    if regions:
        bounds = region_bounds or (0, 0, cols - 1, rows - 1)
        ds.SequenceOfUltrasoundRegions = Sequence([ultrasound_region(bounds, spacing_mm_x, spacing_mm_y,
                                                                     reference_pixel)])
    if pixel_spacing:
        ds.PixelSpacing = [spacing_mm_y, spacing_mm_x]
    return ds


def _frames(ds: Dataset) -> list[np.ndarray]:
    """The native grey frames of a dataset made by ``build_us_dataset``."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    flat = np.frombuffer(ds.PixelData, dtype=np.uint8)
    return list(flat.reshape(count, int(ds.Rows), int(ds.Columns)))


def encode_jpeg_baseline(ds: Dataset, quality: int = JPEG_QUALITY) -> None:
    """Re-encode an 8-bit grey dataset in place as JPEG Baseline (Process 1), YBR_FULL_422, as scanners do.

    Each frame is written as a YCbCr JPEG with 4:2:2 chroma subsampling (Pillow, ``quality``), encapsulated
    one fragment per frame; (0028,2110) Lossy Image Compression is set to 01.
    """
    from PIL import Image

    streams = []
    for frame in _frames(ds):
        buffer = io.BytesIO()
        Image.fromarray(frame, mode="L").convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=1)
        streams.append(buffer.getvalue())
    _set_lossy_colour_pixels(ds, encapsulate(streams), sum(len(s) for s in streams), pdu.JPEGBaseline8Bit,
                             "YBR_FULL_422", "ISO_10918_1")


def _set_lossy_colour_pixels(ds: Dataset, encapsulated: bytes, compressed_bytes: int, syntax: pdu.UID,
                             photometric: str, method: str) -> None:
    """Replace a grey dataset's native pixels with lossy 3-sample encapsulated ones, and say so in the header."""
    raw_bytes = len(ds.PixelData) * 3
    ds.PixelData = encapsulated
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{raw_bytes / max(compressed_bytes, 1):.2f}"[:16]
    ds.LossyImageCompressionMethod = method


# A video stream is cut into items of at most this many bytes (PS3.5 A.4: any split is allowed).
VIDEO_FRAGMENT_BYTES = 1 << 16


def encode_h264(ds: Dataset, crf: int = 18) -> None:
    """Re-encode an 8-bit grey dataset in place as an MPEG-4 AVC/H.264 cine, as scanners export video.

    One elementary stream (libx264, yuv420p; even rows and columns needed) in items of at most
    ``VIDEO_FRAGMENT_BYTES`` after an empty Basic Offset Table; YBR_PARTIAL_420; (0028,2110) Lossy
    Image Compression 01.
    """
    import av

    frames = _frames(ds)
    rows, cols = frames[0].shape
    if rows % 2 or cols % 2:
        raise ValueError(f"H.264 (4:2:0) needs even rows and columns, not {rows}x{cols}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = cols, rows, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            rgb = np.repeat(frame[..., None], 3, axis=2)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    video = buffer.getvalue()
    fragments = max(1, -(-len(video) // VIDEO_FRAGMENT_BYTES))
    _set_lossy_colour_pixels(ds, encapsulate([video], fragments_per_frame=fragments, has_bot=False), len(video),
                             pdu.MPEG4HP41, "YBR_PARTIAL_420", "ISO_14496_10")


def encode(ds: Dataset, encoding: Encoding | str) -> Dataset:
    """Encode the pixel data of a ``build_us_dataset`` dataset in place; returns it.

    RLE, JPEG-LS and JPEG 2000 are lossless (the SOP Instance UID is kept); JPEG baseline is lossy.
    Raises:
        ValueError: unknown encoding, or its encoder plugin is not installed (the message names it).
    """
    encoding = Encoding(encoding)
    if encoding is Encoding.EXPLICIT_LE:
        return ds
    if encoding is Encoding.JPEG_BASELINE:
        encode_jpeg_baseline(ds)
        return ds
    if encoding is Encoding.H264:
        encode_h264(ds)
        return ds
    syntax, plugin, package = {
        Encoding.RLE: (pdu.RLELossless, "pydicom", "pydicom"),
        Encoding.JPEG_LS: (pdu.JPEGLSLossless, "pyjpegls", "pyjpegls"),
        Encoding.JPEG2000: (pdu.JPEG2000Lossless, "pylibjpeg", "pylibjpeg-openjpeg"),
    }[encoding]
    try:
        ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
    except RuntimeError as exc:
        raise ValueError(f"cannot encode {encoding.value}: {exc}; install {package}") from exc
    return ds


def write_us_image(path: str | Path, image: np.ndarray, spacing_mm_x: float, spacing_mm_y: float | None = None,
                   identity: ScanIdentity | None = None, encoding: Encoding | str = Encoding.EXPLICIT_LE,
                   **kwargs: object) -> Path:
    """Write ``image`` as a US Image Storage file (see ``build_us_dataset`` and ``encode``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = encode(build_us_dataset(image, spacing_mm_x, spacing_mm_y, identity, **kwargs),  # type: ignore[arg-type]
                encoding)
    ds.save_as(path, enforce_file_format=True)
    return path
