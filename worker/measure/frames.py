"""The frame a stored row was measured on, read again from its file (the reviewers' image, the exported labels).

The same reader as the pipeline (``dicom_io.iter_scans``, bounded by ``FETALHC_MAX_SCAN_MB``), the same frame,
cropped to the same calibrated region, so that the row's ellipse (mm from that region's corner) lands where it
was measured.
"""

from __future__ import annotations

from pathlib import Path

from db import Job, Measurement
from dicom_io.bounds import scan_budget
from dicom_io.errors import DicomError
from dicom_io.reader import iter_scans
from dicom_io.scan import Scan

PRUNED_NOTE = "spool file pruned"  # worker.ops.spool_retention's note in a job's detail


class FrameGone(FileNotFoundError):
    """The row's file is not there any more; the message says why when it is known (spool retention)."""


def scan_file(row: Measurement, job: Job | None) -> Path:
    """The file the row was measured from (its own path, else its job's).

    Raises:
        FrameGone: no file recorded, or the file is no longer there (pruned by spool retention, moved, deleted).
    """
    text = row.path or (job.path if job is not None else None)
    if not text:
        raise FrameGone(f"measurement {row.id} records no file to read its image from")
    path = Path(text)
    if not path.is_file():
        pruned = job is not None and bool(job.detail) and PRUNED_NOTE in (job.detail or "")
        why = ("spool retention deleted it (FETALHC_SPOOL_RETENTION_DAYS; the job's detail says when)" if pruned
               else "it was moved or deleted since it was measured")
        raise FrameGone(f"the scan of measurement {row.id} is no longer there: {why}")
    return path


def measured_frame(row: Measurement, path: Path, max_scan_mb: float) -> Scan:
    """The frame and region the row was measured on, decoded again.

    Raises:
        DicomError: the file no longer reads, or has no such frame.
    """
    region = (row.region_x0, row.region_y0, row.region_x1, row.region_y1)
    wanted = None if any(v is None for v in region) else tuple(int(v) for v in region)  # type: ignore[arg-type]
    with scan_budget(max_scan_mb):
        scans = list(iter_scans(path, [row.frame or 1]))
    for scan in scans:
        if scan.calibration.region == wanted:
            return scan
    if scans:
        return scans[0]
    raise DicomError(f"measurement {row.id}: frame {row.frame} holds no image", reason="no_such_frame")
