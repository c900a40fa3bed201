"""The head-plane gate's data: positives, negatives and made negatives, split by subject or group.

- Positives: HC18 head planes (van den Heuvel et al. 2018). Training images take the shipped
  segmentation model's own subject split (``hc18_unet.split.json``), so the gate's validation heads
  are heads neither network saw; the unlabelled ``test_set`` joins the training side.
- Negatives: ``us-negatives`` (PSFHS intrapartum views, POCUS lung frames), split by the
  manifest's ``group`` column (``group_split``).
- Made negatives (``models.training.gate_synth``): HC18 images with the skull echo taken out, shaped like
  an abdomen, a thorax or a femur view. They teach what no open data set here shows: a round
  fetal section without a skull is not a head.
- ``other-heads`` (FETAL_PLANES_DB brain planes): never trained on, never tuned on; reported only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.training.hc18 import load_cases, subject_of

HEAD, NOT_HEAD = 1, 0
VAL_EVERY = 5  # one group in five is validation


def group_split(group: str) -> str:
    """``val`` for one group in five (stable: sha1 of the group's name), else ``train``."""
    return "val" if int(hashlib.sha1(group.encode()).hexdigest(), 16) % VAL_EVERY == 0 else "train"


@dataclass(frozen=True)
class GateItem:
    """One image for the gate: where it is, what it is, and which side of the split it is on.

    ``source``: hc18 | hc18_test | psfhs | pocus_lung | other_heads | made_<kind>;
    ``split``: train | val | report (other-heads: looked at, never fitted or tuned on);
    ``made``: for a made negative, the kind of view made from the HC18 image at ``path``.
    """

    key: str
    path: Path | None
    source: str
    group: str
    label: int
    split: str
    pixel_size_mm: float | None = None
    made: str | None = None

    def load(self) -> np.ndarray:
        """Grey uint8 pixels (rows, cols) of the file itself (a made negative is made from them)."""
        if self.path is None:
            raise ValueError(f"{self.key} is drawn, not read from a file")
        return np.asarray(Image.open(self.path).convert("L"))


def hc18_items(root: Path, split_file: Path) -> list[GateItem]:
    """HC18 training images on the segmentation model's split, and the test set as training heads."""
    split = json.loads(split_file.read_text())
    val = set(split["val"])
    items = [GateItem(f"hc18/{c.name}", c.image_path, "hc18", f"hc18-{c.subject}", HEAD,
                      "val" if c.name in val else "train", c.pixel_size_mm)
             for c in load_cases(root)]
    test = root / "test_set"
    if test.is_dir():
        items += [GateItem(f"hc18_test/{c.name}", c.image_path, "hc18_test", f"hc18test-{subject_of(c.name)}",
                           HEAD, "train", c.pixel_size_mm) for c in load_cases(test, labelled_only=False)]
    return items


def negative_items(root: Path) -> list[GateItem]:
    """The us-negatives manifest, split by ``group``."""
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = []
    for row in rows:
        source = "psfhs" if row["source"].upper().startswith("PSFHS") else "pocus_lung"
        items.append(GateItem(f"neg/{row['file']}", root / row["file"], source, row["group"], NOT_HEAD,
                              group_split(row["group"])))
    return items


def other_head_items(root: Path) -> list[GateItem]:
    """FETAL_PLANES_DB brain planes: report only."""
    return [GateItem(f"other/{p.name}", p, "other_heads", p.name.split("_")[0], HEAD, "report")
            for p in sorted(root.glob("*.png"))]


MADE_KINDS = ("abdomen", "thorax", "femur")


MADE_PER_IMAGE = 2


def made_items(heads: list[GateItem]) -> list[GateItem]:
    """Two made negatives (of two kinds, in turn) per labelled HC18 image, on that image's split."""
    hc18 = [h for h in heads if h.source == "hc18" and h.path is not None]
    items = []
    for j, h in enumerate(hc18):
        for k in range(MADE_PER_IMAGE):
            kind = MADE_KINDS[(j + k) % len(MADE_KINDS)]
            items.append(GateItem(f"made_{kind}/{h.path.name}", h.path, f"made_{kind}", h.group, NOT_HEAD,
                                  h.split, h.pixel_size_mm, made=kind))
    return items


PHANTOMS = {"train": 240, "val": 40}


def phantom_items() -> list[GateItem]:
    """Drawn sections (``models.training.gate_synth.ring_phantom``): heads with a skull ring, and the same
    without one (a filled ellipse is not a head). The project's own test scans are such heads."""
    items = []
    for split, n in PHANTOMS.items():
        for i in range(n):
            for kind, label in (("phantom_head", HEAD), ("phantom_ringless", NOT_HEAD)):
                items.append(GateItem(f"{kind}/{split}{i:03d}", None, kind, f"{kind}-{split}{i}", label, split,
                                      made=kind))
    return items


def all_items(shared: Path, split_file: Path) -> list[GateItem]:
    """Every gate image under ``shared`` (hc18, us-negatives, other-heads); missing folders are skipped."""
    items: list[GateItem] = phantom_items()
    if (shared / "hc18" / "training_set").is_dir():
        items += hc18_items(shared / "hc18", split_file)
        items += made_items(items)
    if (shared / "us-negatives" / "manifest.csv").is_file():
        items += negative_items(shared / "us-negatives")
    if (shared / "other-heads").is_dir():
        items += other_head_items(shared / "other-heads")
    return items
