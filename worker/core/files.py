"""Finding the files to measure under the paths a user names (files, folders, recursively)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

SKIPPED_NAMES = frozenset({"DICOMDIR"})


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each named file, and every file under each named folder (sorted, hidden files skipped).

    Raises:
        FileNotFoundError: a named path does not exist.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith(".") and child.name not in SKIPPED_NAMES:
                    yield child
        else:
            raise FileNotFoundError(f"{path} does not exist")
