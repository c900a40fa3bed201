"""DICOM in and out: read ultrasound files into ``Scan`` values, resolve calibration, write files; read the
scanners' OB-GYN reports (``ObReport``).

No torch and no database here.
"""

from dicom_io.errors import CalibrationError, DicomError, UnsupportedImageError
from dicom_io.ob_report import (
    FetusBiometry,
    GaKind,
    MalformedReportError,
    ObReport,
    is_ob_report,
    parse_ob_report,
    read_ob_report,
)
from dicom_io.reader import iter_scans, read_header, read_scan
from dicom_io.scan import Calibration, Scan, SpacingSource
from dicom_io.writer import Encoding, ScanIdentity, build_us_dataset, encode, stable_uid, write_us_image

__all__ = [
    "Calibration", "CalibrationError", "DicomError", "Encoding", "Scan", "ScanIdentity", "SpacingSource",
    "UnsupportedImageError", "build_us_dataset", "encode", "iter_scans", "read_header", "read_scan", "stable_uid",
    "write_us_image",
    # OB-GYN ultrasound reports (dicom_io.ob_report)
    "FetusBiometry", "GaKind", "MalformedReportError", "ObReport", "is_ob_report", "parse_ob_report",
    "read_ob_report",
]
