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


class PixelHeaderMismatch(DicomError):
    """The pixel data says other dimensions than the image header (a compressed frame's SOF/SIZ marker,
    a video stream's frame size, a deflated dataset that inflates past what its header needs).

    Refused before decoding: a frame header that claims more pixels is how a decompression bomb works.
    """

    reason = "pixel_header_mismatch"


class DecodeBudgetError(UnsupportedImageError):
    """Decoding this scan would need more memory than ``FETALHC_MAX_SCAN_MB`` allows (from its declared size)."""

    reason = "over_memory_budget"


class MalformedReportError(DicomError):
    """An OB-GYN report that cannot be recorded as one (no UIDs, no content tree, an unwalkable tree).

    ``sop_instance_uid`` / ``study_instance_uid`` hold what could be read (``""`` when not), so the
    caller can still record the report as malformed. Pickles with its UIDs (Celery ships errors).
    """

    reason = "malformed_report"

    def __init__(self, message: str, sop_instance_uid: str = "", study_instance_uid: str = "") -> None:
        super().__init__(message)
        self.args = (message, sop_instance_uid, study_instance_uid)
        self.sop_instance_uid = sop_instance_uid
        self.study_instance_uid = study_instance_uid


class SrError(FetalHCError, ValueError):
    """A measurement row or source header from which no correct SR can be built (the message says why)."""

    reason = "sr_unbuildable"
