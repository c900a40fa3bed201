"""Training configuration and its command-line arguments (light: no torch, so the CLI starts fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """Everything one training run depends on (written beside the weights)."""

    data: Path
    out: Path
    arch: str = "unet"
    input_size: tuple[int, int] = (256, 384)
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    seed: int = 20260
    val_every: int = 2
    device: str = "auto"
    time_limit_min: float | None = None
    resume: Path | None = None
    init_weights: Path | None = None  # start from these network weights (fine-tuning, continuing)
    limit: int | None = None  # use only the first N cases (smoke tests)
    threads: int | None = None
    augment: str = "standard"  # standard | light
    workers: int | None = None  # augmentation processes; None: 0 on CPU, 6 on CUDA
    ema_decay: float = 0.0  # > 0: validate and ship an exponential moving average of the weights
    boundary_weight: float = 0.0  # > 0: extra cross-entropy weight on a band around the label's edge
    extra_data: list[Path] = field(default_factory=list)  # labelled folders added to the training side only
    arch_kwargs: dict[str, Any] = field(default_factory=dict)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``fetalhc train``."""
    p = parser or argparse.ArgumentParser(prog="fetalhc train", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="HC18-layout folder (e.g. ../shared/hc18)")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    p.add_argument("--arch", default="unet", help="unet | attention-unet | flexible-unet")
    p.add_argument("--input-size", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=20260)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="train for this many minutes; the learning-rate schedule follows time, not epochs")
    p.add_argument("--resume", type=Path, default=None, help="last.pt of an earlier run (same schedule)")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="start from the network weights of a last.pt or weights file, with a new schedule")
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--augment", default="standard", choices=("standard", "light"),
                   help="augmentation strength; light for a last, settling phase")
    p.add_argument("--workers", type=int, default=None,
                   help="data-augmentation worker processes (default: 0 on CPU, 6 on CUDA)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and save an exponential moving average of the weights (e.g. 0.999; 0: off)")
    p.add_argument("--boundary-weight", type=float, default=0.0, metavar="W",
                   help="weight the cross-entropy 1 + W on a band around the skull's edge (0: plain DiceCE)")
    p.add_argument("--extra-data", type=Path, nargs="+", default=[], metavar="DIR",
                   help="more labelled HC18-layout folders (e.g. pseudo-labels) for training only; "
                        "the validation split stays that of --data")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="UNet/AttentionUnet feature channels per level (default 16 32 64 128 256)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from parsed arguments."""
    return TrainConfig(
        data=args.data, out=args.out, arch=args.arch, input_size=tuple(args.input_size), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction, seed=args.seed,
        val_every=args.val_every, device=args.device, time_limit_min=args.time_limit_min, resume=args.resume,
        init_weights=args.init_weights,
        limit=args.limit, threads=args.threads, workers=args.workers, augment=args.augment,
        ema_decay=args.ema, boundary_weight=args.boundary_weight, extra_data=list(args.extra_data),
        arch_kwargs={"channels": list(args.channels)} if args.channels else {},
    )


