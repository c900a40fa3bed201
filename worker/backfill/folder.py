"""Backfill source: a folder tree (recursive, DICOMDIR-aware); files are queued where they lie.

Each file's header is read only up to group 0008 (``dicom_io.reader.read_group_0008``: a deflated file is never
inflated whole), and the runner takes each file in by the one intake rule (``worker.ingest.intake``: its own
UIDs, ``FETALHC_MAX_INSTANCE_MB``, conflicts with an instance already received).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet

from dicom_io.errors import DicomError
from dicom_io.reader import read_group_0008
from worker.backfill.runner import Candidate
from worker.ingest.intake import is_intake_class

log = logging.getLogger(__name__)

_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError, OSError)


def parse_da(value: object) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None when empty or malformed."""
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def in_range(day: dt.date | None, since: dt.date | None, until: dt.date | None) -> bool:
    """True when ``day`` lies in [since, until]; a scan without a date is outside any bounded range."""
    if since is None and until is None:
        return True
    if day is None:
        return False
    return (since is None or day >= since) and (until is None or day <= until)


class FolderSource:
    """Every DICOM file under ``root``.

    Where a folder holds a DICOMDIR (PS3.10 media), its records give the UIDs and the study date
    without opening each file; files it does not reference are still read (header only). Hidden
    names are passed over; anything that is not DICOM is skipped and counted (``not_dicom``).
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"backfill folder {root} does not exist or is not a folder")
        self.root = root
        self.label = "folder"
        self.in_place = True  # files are measured where they lie (not copied to the spool)

    def candidates(self, since: dt.date | None, until: dt.date | None,
                   skip: Callable[[str], None]) -> Iterator[Candidate]:
        covered: set[Path] = set()
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(folder)
            if "DICOMDIR" in files:
                yield from self._from_dicomdir(here / "DICOMDIR", since, until, skip, covered)
            for name in sorted(files):
                path = here / name
                if name.startswith(".") or name == "DICOMDIR" or path.resolve() in covered:
                    continue
                cand = self._from_file(path, skip)
                if cand is None:
                    continue
                if not in_range(cand.study_date, since, until):
                    skip("out_of_range")
                    continue
                yield cand

    def _from_file(self, path: Path, skip: Callable[[str], None]) -> Candidate | None:
        try:
            if not path.is_file() or path.is_symlink() and not path.resolve().is_relative_to(self.root.resolve()):
                skip("not_a_regular_file")  # a FIFO, a device, or a link out of the folder: never opened
                return None
            ds = read_group_0008(path)
        except (DicomError, *_READ_ERRORS):
            skip("not_dicom")
            return None
        sop_class = str(ds.get("SOPClassUID", "") or "")
        uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        if not uid:
            skip("not_dicom")
            return None
        if not is_intake_class(sop_class):  # ultrasound images and SRs (OB-GYN reports: recorded, not measured)
            skip("not_ultrasound")
            return None
        return Candidate(uid, sop_class, parse_da(ds.get("StudyDate")), path.resolve())

    def _from_dicomdir(self, dicomdir: Path, since: dt.date | None, until: dt.date | None,
                       skip: Callable[[str], None], covered: set[Path]) -> Iterator[Candidate]:
        try:
            fileset = FileSet(pydicom.dcmread(dicomdir))
        except _READ_ERRORS:
            log.warning("a DICOMDIR could not be read; its folder is scanned file by file instead")
            return
        for instance in fileset:
            path = Path(instance.path).resolve()
            covered.add(path)
            sop_class = str(getattr(instance, "SOPClassUID", "") or "")
            if not is_intake_class(sop_class):
                skip("not_ultrasound")
                continue
            if not path.is_file():
                skip("missing_file")
                continue
            day = parse_da(getattr(instance, "StudyDate", None))
            if not in_range(day, since, until):
                skip("out_of_range")
                continue
            yield Candidate(str(instance.SOPInstanceUID), sop_class, day, path)

    def fetch(self, candidate: Candidate) -> Path:
        """The file itself (already durable; not copied)."""
        path = Path(candidate.ref)
        if not path.is_file():
            raise FileNotFoundError("the file disappeared since it was listed")
        return path

    def close(self) -> None:
        """Nothing to release."""
