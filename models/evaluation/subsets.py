"""Which images to evaluate: the weights' train/val split file and the ``--subset`` (val, all or a names file)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from models.training.hc18 import Case

log = logging.getLogger("models.evaluation")  # one logger for the whole evaluation, as before the split


def find_split_file(weights: Path) -> Path | None:
    """The train/val split written beside a weights file: ``<stem>.split.json``, ``<name>.split.json``
    or the training run's ``split.json`` in the same folder."""
    for candidate in (weights.with_suffix(".split.json"), weights.with_name(weights.name + ".split.json"),
                      weights.parent / "split.json"):
        if candidate.is_file():
            return candidate
    return None


def _read_names(path: Path) -> list[str]:
    if path.suffix == ".json":
        blob = json.loads(path.read_text())
        names = blob.get("val", []) if isinstance(blob, dict) else blob
    else:
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [Path(n).name for n in names if n]


def _split_names(split_file: Path | None) -> tuple[set[str], set[str]]:
    if split_file is None:
        return set(), set()
    split = json.loads(split_file.read_text())
    return set(split.get("train", [])), set(split.get("val", []))


def default_subset(cases: Sequence[Case], split_file: Path | None) -> str:
    """``val`` when the folder holds labelled images the training run split (train or val), else ``all``.

    A folder the model never saw (the held-back HC18 images, phantoms, another site) is held out
    as a whole; unlabelled images (the HC18 test set reuses training file names) never match.
    """
    train, val = _split_names(split_file)
    return "val" if any(c.name in train | val for c in cases if c.hc_mm is not None) else "all"


def select_cases(cases: list[Case], subset: str, split_file: Path | None) -> tuple[list[Case], bool]:
    """The cases of ``subset`` (``val``, ``all`` or a names file) and whether any was trained on."""
    trained, held_out = _split_names(split_file)
    if subset == "all":
        chosen = cases
    elif subset == "val":
        if split_file is None:
            raise ValueError("--subset val needs a split file beside the weights (<weights>.split.json or "
                             "split.json); use --subset all or --subset FILE")
        chosen = [c for c in cases if c.name in held_out]
        if len(chosen) < len(held_out):
            log.warning("%d validation images of %s are not in this folder", len(held_out) - len(chosen), split_file)
    else:
        path = Path(subset)
        if not path.is_file():
            raise ValueError(f"--subset must be val, all or a file of image names; {subset!r} is none of these")
        wanted = set(_read_names(path))
        chosen = [c for c in cases if c.name in wanted]
        if len(chosen) < len(wanted):
            log.warning("%d names of %s are not in this folder", len(wanted) - len(chosen), path)
    if not chosen:
        raise ValueError(f"subset {subset!r} selects no image of this folder")
    # Trained-on images make metrics optimistic; only labelled images can have been trained on.
    leak = any(c.name in trained and c.hc_mm is not None for c in chosen)
    return chosen, leak
