"""Evaluation configuration and its command-line arguments (light: no torch, so the CLI starts fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalConfig:
    """Everything one evaluation run depends on.

    ``subset``: ``val`` (the held-out names of the weights' split file), ``all``, or the path of a
    text file of image names; None picks ``val`` when the folder holds labelled images named in
    that split file, else ``all``. ``weights`` None means the shipped model.
    """

    data: Path
    weights: Path | None = None
    out: Path = Path("runs/eval")
    subset: str | None = None
    submission: Path | None = None
    limit: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    gallery: int = 12
    threads: int | None = None
    backend: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if self.gallery < 0:
            raise ValueError(f"--gallery must be 0 or more, got {self.gallery}")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``fetalhc eval``."""
    p = parser or argparse.ArgumentParser(prog="fetalhc eval", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="HC18-layout folder (e.g. ../shared/hc18)")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (default runs/eval)")
    p.add_argument("--subset", default=None, metavar="val|all|FILE",
                   help="val: the held-out images of the weights' split file (default when this folder "
                        "holds images of that split); all: every image (default otherwise); "
                        "FILE: a text file of image names")
    p.add_argument("--submission", type=Path, default=None, metavar="OUT.csv",
                   help="also write the HC18 challenge CSV (works on unlabelled folders such as test_set)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the subset")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    p.add_argument("--gallery", type=int, default=12, help="worst cases drawn in gallery.png (0: none)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino", "onnxruntime"],
                   help="inference backend, as FETALHC_BACKEND (default auto: OpenVINO on CPU when installed)")
    p.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16"],
                   help="the network's arithmetic, as FETALHC_PRECISION (default auto)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """An EvalConfig from parsed arguments."""
    return EvalConfig(
        data=args.data, weights=args.weights, out=args.out, subset=args.subset, submission=args.submission,
        limit=args.limit, batch_size=args.batch_size, device=args.device, gallery=args.gallery,
        threads=args.threads, backend=args.backend, precision=args.precision,
    )
