"""Dating manifests: a CSV from the hospital giving each scan's GA (days), LMP or EDD.

Keyed by SOP Instance UID, Study Instance UID or accession number (the first that matches wins,
most specific first). GA at the scan date: given directly; from LMP, scan date - LMP; from EDD,
280 days - (EDD - scan date) (Naegele's rule, EDD = LMP + 280 days).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dicom_io.errors import DicomError
from dicom_io.reader import parse_date, read_dataset

KEY_COLUMNS = ("sop_instance_uid", "study_instance_uid", "accession_number")
DATING_COLUMNS = ("ga_days", "lmp", "edd")
PREGNANCY_DAYS = 280


@dataclass(frozen=True)
class Dating:
    """One manifest row's dating: exactly one of GA in days, LMP or EDD."""

    ga_days: float | None = None
    lmp: dt.date | None = None
    edd: dt.date | None = None

    def ga_at(self, scan_date: dt.date | None) -> float | None:
        """GA in days on ``scan_date`` (None when LMP/EDD is given but the scan has no date)."""
        if self.ga_days is not None:
            return self.ga_days
        if scan_date is None:
            return None
        if self.lmp is not None:
            return float((scan_date - self.lmp).days)
        if self.edd is not None:
            return float(PREGNANCY_DAYS - (self.edd - scan_date).days)
        return None


def _parse_row(row: dict[str, str], line: int) -> Dating:
    ga, lmp, edd = (row.get(c, "").strip() for c in DATING_COLUMNS)
    if sum(bool(v) for v in (ga, lmp, edd)) != 1:
        raise ValueError(f"manifest line {line}: give exactly one of {', '.join(DATING_COLUMNS)}")
    try:
        if ga:
            days = float(ga)
            if not 0 < days < 320:
                raise ValueError(f"GA {days} days is not a pregnancy")
            return Dating(ga_days=days)
        return Dating(lmp=dt.date.fromisoformat(lmp)) if lmp else Dating(edd=dt.date.fromisoformat(edd))
    except ValueError as exc:
        raise ValueError(f"manifest line {line}: {exc} (dates as YYYY-MM-DD, GA in days)") from None


class Manifest:
    """Dating looked up by SOP Instance UID, then Study Instance UID, then accession number."""

    def __init__(self, entries: dict[str, dict[str, Dating]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a manifest CSV; errors name the line and the columns expected."""
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower() for c in reader.fieldnames or []}
            keys = [c for c in KEY_COLUMNS if c in columns]
            if not keys or not columns & set(DATING_COLUMNS):
                raise ValueError(f"manifest {path} needs a key column ({', '.join(KEY_COLUMNS)}) and a dating "
                                 f"column ({', '.join(DATING_COLUMNS)}); it has {sorted(columns)}")
            entries: dict[str, dict[str, Dating]] = {k: {} for k in KEY_COLUMNS}
            for line, raw in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "") for k, v in raw.items() if k}
                dating = _parse_row(row, line)
                for key in keys:
                    if row.get(key, "").strip():
                        entries[key][row[key].strip()] = dating
        return cls(entries)

    def lookup(self, sop_uid: str, study_uid: str, accession: str) -> Dating | None:
        """The most specific entry matching this instance."""
        for key, value in zip(KEY_COLUMNS, (sop_uid, study_uid, accession)):
            if value and value in self.entries[key]:
                return self.entries[key][value]
        return None

    def ga_days_for_file(self, path: Path) -> float | None:
        """GA (days) at the scan date for one DICOM file, from its header (None: no entry)."""
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except DicomError:
            return None
        dating = self.lookup(str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", "")),
                             str(ds.get("AccessionNumber", "") or ""))
        return dating.ga_at(parse_date(ds.get("StudyDate"))) if dating else None

    def ga_days_for_files(self, paths: Iterable[Path]) -> dict[str, float]:
        """Resolved path -> GA days, for the files the manifest dates."""
        found = {}
        for path in paths:
            ga = self.ga_days_for_file(path)
            if ga is not None:
                found[str(Path(path).resolve())] = ga
        return found
