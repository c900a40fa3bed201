"""DICOM errors: each names why a file cannot be measured, so the failed row says it plainly."""

from __future__ import annotations

from models.errors import FetalHCError


class DicomError(FetalHCError):
    """The file is not a DICOM image fetalhc can read (not DICOM, truncated, no pixels...)."""

    reason = "dicom_error"


class CalibrationError(DicomError):
    """No trustworthy millimetre scale: no usable ultrasound region and no Pixel Spacing."""

    reason = "uncalibrated"


class UnsupportedImageError(DicomError):
    """A readable DICOM that is not a measurable B-mode ultrasound image (CT, SR, Doppler...)."""

    reason = "unsupported_image"
