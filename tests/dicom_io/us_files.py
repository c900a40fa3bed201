"""Test files for dicom_io: one grey image written in every pixel layout, and the real scanner files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid as pdu
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space

from dicom_io.phantom import make_phantom
from dicom_io.writer import build_us_dataset

SPACING_MM = 0.2
SHAPE = (96, 128)  # rows, cols: small and even (YBR_FULL_422 pairs columns)

# BT.601 luma weights, as the reader uses them.
LUMA = np.array([0.299, 0.587, 0.114])


def grey_image() -> np.ndarray:
    """A small phantom spanning the full 0..255 range (so stretched deep grey maps back exactly)."""
    image = make_phantom(shape=SHAPE, hc_mm=50.0, spacing_mm=SPACING_MM, seed=5).image.copy()
    image[0, 0], image[0, 1] = 0, 255
    return image


def colour_image(grey: np.ndarray) -> np.ndarray:
    """A tinted RGB version of ``grey`` (channels differ, so a wrong colour conversion shows)."""
    g = grey.astype(np.float64)
    return np.stack([g, g * 0.8, np.minimum(g * 1.15, 255)], axis=-1).round().astype(np.uint8)


def expected_luma(rgb: np.ndarray) -> np.ndarray:
    """What the reader should make of ``rgb``."""
    return np.clip(np.rint(rgb.astype(np.float64) @ LUMA), 0, 255).astype(np.uint8)


def _base(grey: np.ndarray) -> Dataset:
    return build_us_dataset(grey, SPACING_MM)


def _set_pixels(ds: Dataset, data: bytes, samples: int, photometric: str, bits: int = 8, stored: int | None = None,
                signed: bool = False) -> Dataset:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = stored or bits
    ds.HighBit = (stored or bits) - 1
    ds.PixelRepresentation = int(signed)
    if samples == 3:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.PixelData = data
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    return ds


def _palette(ds: Dataset, entries: int, values: np.ndarray, little: bool = True) -> None:
    """A grey ramp palette: every channel maps index i to ``values[i]`` (16-bit entries)."""
    data = values.astype("<u2" if little else ">u2").tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries % 65536, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"


def ybr_full_422_bytes(ybr: np.ndarray) -> bytes:
    """Native YBR_FULL_422 layout (PS3.5 8.2.1): Y1 Y2 Cb Cr for each pair of pixels, chroma averaged."""
    y = ybr[..., 0]
    cb = ybr[..., 1].reshape(ybr.shape[0], -1, 2).mean(axis=2).round().astype(np.uint8)
    cr = ybr[..., 2].reshape(ybr.shape[0], -1, 2).mean(axis=2).round().astype(np.uint8)
    out = np.empty((ybr.shape[0], ybr.shape[1] // 2, 4), np.uint8)
    out[..., 0], out[..., 1] = y[:, 0::2], y[:, 1::2]
    out[..., 2], out[..., 3] = cb, cr
    return out.tobytes()


def variant(name: str, grey: np.ndarray) -> tuple[Dataset, np.ndarray, int]:
    """(dataset, expected grey, tolerance in grey levels) for one named pixel layout of ``grey``."""
    ds = _base(grey)
    rgb = colour_image(grey)
    if name == "mono2_8":
        return ds, grey, 0
    if name == "mono1_8":
        return _set_pixels(ds, (255 - grey).tobytes(), 1, "MONOCHROME1"), grey, 0
    if name == "mono2_16":  # 12 bits stored in 16: stretched back to 0..255
        return _set_pixels(ds, (grey.astype("<u2") * 16).tobytes(), 1, "MONOCHROME2", 16, 12), grey, 0
    if name == "mono1_16":
        return _set_pixels(ds, (4095 - grey.astype("<u2") * 16).tobytes(), 1, "MONOCHROME1", 16, 12), grey, 0
    if name == "mono2_16_signed":
        values = grey.astype(np.int32) * 100 - 12800
        return _set_pixels(ds, values.astype("<i2").tobytes(), 1, "MONOCHROME2", 16, 16, signed=True), grey, 0
    if name == "mono2_16_be":
        ds = _set_pixels(ds, (grey.astype(np.uint16) * 16).astype(">u2").tobytes(), 1, "MONOCHROME2", 16, 12)
        ds.file_meta.TransferSyntaxUID = pdu.ExplicitVRBigEndian
        return ds, grey, 0
    if name == "rgb":
        return _set_pixels(ds, rgb.tobytes(), 3, "RGB"), expected_luma(rgb), 1
    if name == "rgb_planar":
        ds = _set_pixels(ds, np.moveaxis(rgb, -1, 0).tobytes(), 3, "RGB")
        ds.PlanarConfiguration = 1
        return ds, expected_luma(rgb), 1
    if name == "rgb_16_be":
        ds = _set_pixels(ds, (rgb.astype(np.uint16) * 256 + 128).astype(">u2").tobytes(), 3, "RGB", 16, 16)
        ds.file_meta.TransferSyntaxUID = pdu.ExplicitVRBigEndian
        return ds, expected_luma(rgb), 1
    if name == "ybr_full":
        ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
        return _set_pixels(ds, ybr.tobytes(), 3, "YBR_FULL"), expected_luma(rgb), 2
    if name == "ybr_full_422":
        ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
        ds = _set_pixels(ds, ybr_full_422_bytes(ybr), 3, "YBR_FULL_422")
        # Averaged chroma shifts luma a little where neighbours differ in colour.
        return ds, expected_luma(rgb), 6
    if name == "palette_8":
        ds = _set_pixels(ds, grey.tobytes(), 1, "PALETTE COLOR")
        _palette(ds, 256, np.arange(256) * 257)
        return ds, grey, 0
    if name == "palette_16_be":
        ds = _set_pixels(ds, (grey.astype(np.uint16) * 16).astype(">u2").tobytes(), 1, "PALETTE COLOR", 16, 12)
        _palette(ds, 4096, (np.arange(4096) // 16) * 257, little=False)
        ds.file_meta.TransferSyntaxUID = pdu.ExplicitVRBigEndian
        return ds, grey, 0
    if name == "rle_rgb":
        ds = _set_pixels(ds, rgb.tobytes(), 3, "RGB")
        ds.compress(pdu.RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        return ds, expected_luma(rgb), 1
    if name == "rle_16":
        ds = _set_pixels(ds, (grey.astype("<u2") * 16).tobytes(), 1, "MONOCHROME2", 16, 12)
        ds.compress(pdu.RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        return ds, grey, 0
    if name == "jpeg_baseline_grey":
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(grey, mode="L").save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = pdu.JPEGBaseline8Bit
        return ds, grey, 12
    if name == "jpeg_ls":
        ds.compress(pdu.JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
        return ds, grey, 0
    if name == "jpeg_ls_16":
        ds = _set_pixels(ds, (grey.astype("<u2") * 16).tobytes(), 1, "MONOCHROME2", 16, 12)
        ds.compress(pdu.JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
        return ds, grey, 0
    if name == "j2k_mono":
        ds.compress(pdu.JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        return ds, grey, 0
    if name == "j2k_ybr_rct":
        ds = _set_pixels(ds, rgb.tobytes(), 3, "YBR_RCT")
        ds.compress(pdu.JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        return ds, expected_luma(rgb), 1
    if name == "j2k_ybr_ict":
        ds = _set_pixels(ds, rgb.tobytes(), 3, "YBR_ICT")
        ds.compress(pdu.JPEG2000, encoding_plugin="pylibjpeg", generate_instance_uid=False, j2k_cr=[4])
        return ds, expected_luma(rgb), 4
    raise KeyError(name)


VARIANTS = (
    "mono2_8", "mono1_8", "mono2_16", "mono1_16", "mono2_16_signed", "mono2_16_be", "rgb", "rgb_planar",
    "rgb_16_be", "ybr_full", "ybr_full_422", "palette_8", "palette_16_be", "rle_rgb", "rle_16",
    "jpeg_baseline_grey", "jpeg_ls", "jpeg_ls_16", "j2k_mono", "j2k_ybr_rct", "j2k_ybr_ict",
)


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (encoding from its transfer syntax)."""
    ds.save_as(path, enforce_file_format=True)
    return path


def real_file(name: str) -> Path:
    """A file of pydicom's test data (pydicom-data's or pydicom's own), never downloaded."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return Path(path)


def read_dicom(path: Path) -> Dataset:
    """pydicom's own reading of a file (for cross-checks)."""
    return pydicom.dcmread(path)
