"""Fixtures of the dicom_io tests (the file builders live in ``us_files``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from us_files import save


@pytest.fixture()
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a dataset under tmp_path: ``write(ds, "name.dcm")``."""
    def _write(ds: Dataset, name: str = "scan.dcm") -> Path:
        return save(copy.deepcopy(ds), tmp_path / name)

    return _write
