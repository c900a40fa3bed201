"""Arrays and torch only: the network, segmentation inference, ellipse fit, biometry in mm, the head-plane
gate, growth standards, training and evaluation. No DICOM, no database, no Celery.

Rooms (README "Layout"). What a worker runs: ``errors.py``, ``growth.py``, ``geometry/``, ``segmentation/``,
``plane/`` and the shipped weights in ``weights/`` (a data folder). What trains and evaluates, never imported
by those: ``training/`` and ``evaluation/`` (import-linter contracts in pyproject.toml).

A room's ``__init__`` names what others may use and imports it on first use (``lazy_exports``), so that light
users, such as the error tree in ``models.errors``, do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``exports`` (submodule -> names) imported from
    its submodule on first use."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
