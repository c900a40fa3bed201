"""Training entry point: HC18 folder -> weights, split file, per-epoch CSV log and curves.

Three layers (nnU-Net style): ``main(argv)`` parses, ``train(cfg)`` is typed and callable from
Python, ``Trainer`` does the work with one method per step.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from models.errors import FetalHCError
from models.geometry.biometry import measure_head
from models.segmentation.network import DEFAULT_KWARGS, build_network, count_parameters, parse_architecture, pick_device
from models.segmentation.preprocess import logits_to_full_size, prepare_input, resize
from models.segmentation.segment import predict_logits
from models.segmentation.weights import save_weights
from models.training.hc18 import Case, load_cases, split_by_subject
from models.training.losses import EdgeWeightedDiceCELoss
from models.training.train_config import TrainConfig, build_parser, config_from_args

log = logging.getLogger(__name__)
WARMUP = 0.03


class LoadHC18d(MapTransform):
    """Deterministic loading of one case: network-size image and soft filled-ellipse label."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__(keys=["image", "label"])
        self.input_size = input_size

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        case: Case = data["case"]
        image = case.load_image()
        ellipse = case.reference_ellipse_px()
        filled = torch.from_numpy(ellipse.filled_mask(image.shape).astype(np.float32))[None]
        return {
            "image": prepare_input(image, self.input_size),
            "label": resize(filled, self.input_size).clamp(0, 1),
            "name": case.name,
        }


AUGMENTATIONS = ("standard", "light")


def train_transforms(input_size: tuple[int, int], augment: str = "standard") -> Compose:
    """Loading plus augmentation that fits ultrasound: pose, gain, speckle, blur, shadows.

    ``light`` keeps the pose changes small and drops speckle, blur and shadows: for a last phase
    that lets the network settle on the annotations' boundary.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    h, w = input_size
    keys = ["image", "label"]
    light = augment == "light"
    pose = (math.pi / 9, 0.1, 0.05) if light else (math.pi / 3, 0.25, 0.12)  # rotation, scale, translation
    steps = [
        LoadHC18d(input_size),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandAffined(
            keys, prob=0.9, rotate_range=pose[0], scale_range=(pose[1], pose[1]),
            translate_range=(h * pose[2], w * pose[2]), mode=("bilinear", "bilinear"), padding_mode="zeros",
        ),
        RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25) if light else (0.6, 1.6)),
        RandScaleIntensityd("image", prob=0.3, factors=0.1 if light else 0.2),
        RandShiftIntensityd("image", prob=0.3, offsets=0.1 if light else 0.2),
    ]
    if not light:
        steps += [
            RandGaussianNoised("image", prob=0.3, std=0.15),
            RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
            # Acoustic shadows: dark blocks over part of the skull.
            RandCoarseDropoutd("image", prob=0.3, holes=1, max_holes=4, spatial_size=(h // 12, w // 24),
                               max_spatial_size=(h // 3, w // 8), fill_value=-1.0),
        ]
    return Compose(steps)


class Trainer:
    """One training run; hooks: ``setup``, ``train_epoch``, ``validate``, ``checkpoint``."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.arch = parse_architecture(cfg.arch).value
        self.arch_kwargs = {**DEFAULT_KWARGS[parse_architecture(cfg.arch)], **cfg.arch_kwargs}
        self.out = Path(cfg.out)
        self.start_epoch = 0
        self.best_adf = math.inf
        self.history: list[dict[str, float]] = []

    def setup(self) -> None:
        """Split, datasets, network, optimiser, schedule; resume when asked."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        cases = load_cases(cfg.data)
        if cfg.limit:
            cases = cases[: cfg.limit]
        self.train_cases, self.val_cases = split_by_subject(cases, cfg.val_fraction, cfg.seed)
        extra_by_folder = {str(folder): load_cases(folder) for folder in cfg.extra_data}
        extra = [case for cases in extra_by_folder.values() for case in cases]
        self.out.mkdir(parents=True, exist_ok=True)
        split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                 "train": sorted(c.name for c in self.train_cases), "val": sorted(c.name for c in self.val_cases)}
        if extra:  # other folders' names can repeat HC18's (test_set reuses 000_HC.png): kept apart
            split["extra_train"] = {folder: sorted(c.name for c in cases) for folder, cases in extra_by_folder.items()}
        (self.out / "split.json").write_text(json.dumps(split, indent=1))
        self.train_cases = self.train_cases + extra
        log.info("split: %d train (%d of them extra) / %d validation images", len(self.train_cases), len(extra),
                 len(self.val_cases))

        transforms = train_transforms(cfg.input_size, cfg.augment)
        transforms.set_random_state(seed=cfg.seed)
        ds = CacheDataset([{"case": c} for c in self.train_cases], transforms, num_workers=2, progress=True)
        workers = cfg.workers if cfg.workers is not None else (6 if self.device.type == "cuda" else 0)
        self.loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                 persistent_workers=workers > 0, pin_memory=self.device.type == "cuda")
        self.val_items = [(c, c.load_image(), c.reference_ellipse_px()) for c in self.val_cases]

        self.net = build_network(self.arch, **self.arch_kwargs).to(self.device)
        log.info("%s with %d parameters on %s", self.arch, count_parameters(self.net), self.device)
        self.loss_fn = (EdgeWeightedDiceCELoss(cfg.boundary_weight) if cfg.boundary_weight > 0
                        else DiceCELoss(sigmoid=True))
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.total_steps = cfg.epochs * max(len(self.loader), 1)
        self.step = 0
        self.elapsed_s = 0.0  # training time spent before this process (resume)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        if cfg.init_weights:
            self._init_from(Path(cfg.init_weights))
        # The moving average starts from the (initial or resumed) weights; it is what validates and ships.
        self.ema = (AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                    if cfg.ema_decay > 0 else None)
        if cfg.resume:
            self._resume(Path(cfg.resume))

    @property
    def eval_net(self) -> torch.nn.Module:
        """The network that validates and is saved as ``best.pt``: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def _init_from(self, path: Path) -> None:
        """Start from the network weights of an earlier run (a last.pt or a weights file)."""
        blob = torch.load(path, map_location=self.device, weights_only=True)
        state = blob.get("net") or blob["state_dict"]
        self.net.load_state_dict({k: v.float() for k, v in state.items()})
        log.info("network initialised from %s", path)

    def _resume(self, path: Path) -> None:
        blob = torch.load(path, map_location=self.device, weights_only=False)
        self.net.load_state_dict(blob["net"])
        self.opt.load_state_dict(blob["opt"])
        self.step = blob["step"]
        self.elapsed_s = blob["elapsed_s"]
        self.start_epoch = blob["epoch"] + 1
        self.best_adf = blob["best_adf"]
        self.history = blob["history"]
        if self.ema is not None and "ema" in blob:
            self.ema.load_state_dict(blob["ema"])
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

    def progress(self) -> float:
        """Fraction of the run done: by training time when a time limit is set, else by steps."""
        if self.cfg.time_limit_min:
            return (self.elapsed_s + time.monotonic() - self.started) / (60 * self.cfg.time_limit_min)
        return self.step / max(self.total_steps, 1)

    def learning_rate(self) -> float:
        """Linear warm-up over the first 3%, then cosine decay to 1% of ``cfg.lr``."""
        p = min(max(self.progress(), 0.0), 1.0)
        if p < WARMUP:
            return self.cfg.lr * (0.1 + 0.9 * p / WARMUP)
        return self.cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (p - WARMUP) / (1 - WARMUP))))

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training cases; returns the mean loss."""
        self.net.train()
        losses = []
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False)
        for batch in bar:
            x, y = batch["image"].to(self.device), batch["label"].to(self.device)
            for group in self.opt.param_groups:
                group["lr"] = self.learning_rate()
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                loss = self.loss_fn(self.net(x), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            self.step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        return float(np.mean(losses)) if losses else math.nan

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """Dice and HC error (mm) on the validation subjects, measured as inference measures them."""
        net = self.eval_net.eval()
        errors, dices, failures = [], [], 0
        for case, image, ref_px in self.val_items:
            x = prepare_input(image, self.cfg.input_size)[None].to(self.device)
            prob = logits_to_full_size(predict_logits(net, x)[0].cpu(), image.shape)
            ref_mask = ref_px.filled_mask(image.shape)
            pred_mask = prob > 0.5
            dices.append(2 * (ref_mask & pred_mask).sum() / max(ref_mask.sum() + pred_mask.sum(), 1))
            try:
                hc = measure_head(prob, case.pixel_size_mm, case.pixel_size_mm).hc_mm
                errors.append(hc - float(case.hc_mm))
            except FetalHCError:
                failures += 1
        err = np.abs(np.array(errors)) if errors else np.array([math.nan])
        return {"val_adf_mm": float(err.mean()), "val_median_mm": float(np.median(err)),
                "val_p95_mm": float(np.percentile(err, 95)), "val_df_mm": float(np.mean(errors)) if errors else math.nan,
                "val_dice": float(np.mean(dices)), "val_failures": float(failures)}

    def checkpoint(self, epoch: int, metrics: dict[str, float]) -> None:
        """Keep ``last.pt`` for resuming and ``best.pt`` (lowest validation ADF) for shipping."""
        blob = {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "elapsed_s": self.elapsed_s + time.monotonic() - self.started, "epoch": epoch,
                "best_adf": self.best_adf, "history": self.history}
        if self.ema is not None:
            blob["ema"] = self.ema.state_dict()
        torch.save(blob, self.out / "last.pt")
        adf = metrics.get("val_adf_mm", math.nan)
        if math.isfinite(adf) and adf < self.best_adf:
            self.best_adf = adf
            meta = {"model_name": f"hc18-{self.arch}", "epoch": epoch + 1, "train_config": _jsonable(asdict(self.cfg)),
                    "validation": metrics, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            save_weights(self.out / "best.pt", self.eval_net, self.arch, self.arch_kwargs, self.cfg.input_size,
                         meta)
            log.info("new best validation ADF %.3f mm at epoch %d", adf, epoch + 1)

    def run(self) -> dict[str, float]:
        """Train for the configured epochs (or time limit); returns the best validation metrics."""
        self.started = time.monotonic()
        self.setup()
        best: dict[str, float] = {}
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.monotonic()
            row: dict[str, float] = {"epoch": epoch + 1, "train_loss": self.train_epoch(epoch),
                                     "lr": self.learning_rate()}
            last = epoch == self.cfg.epochs - 1
            out_of_time = self.cfg.time_limit_min is not None and self.progress() >= 1.0
            if (epoch + 1) % self.cfg.val_every == 0 or last or out_of_time:
                row.update(self.validate())
            row["seconds"] = time.monotonic() - t0
            self.history.append(row)
            self.checkpoint(epoch, row)
            if "val_adf_mm" in row and row["val_adf_mm"] <= self.best_adf:
                best = row
            self._write_log()
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
            if out_of_time:
                log.warning("time limit of %.1f min reached; stopping after epoch %d", self.cfg.time_limit_min, epoch + 1)
                break
        return best

    def _write_log(self) -> None:
        keys = sorted({k for row in self.history for k in row}, key=lambda k: (k != "epoch", k))
        with open(self.out / "log.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        plot_curves(self.history, self.out / "curves.png")


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss, Dice and HC error per epoch, as the seed projects showed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = [r["epoch"] for r in history]
    axes[0].plot(epochs, [r["train_loss"] for r in history])
    axes[0].set(title="training loss (Dice + CE)", xlabel="epoch")
    val = [r for r in history if "val_dice" in r]
    axes[1].plot([r["epoch"] for r in val], [r["val_dice"] for r in val], marker="o")
    axes[1].set(title="validation Dice", xlabel="epoch")
    axes[2].plot([r["epoch"] for r in val], [r["val_adf_mm"] for r in val], marker="o", label="mean |error|")
    axes[2].plot([r["epoch"] for r in val], [r["val_median_mm"] for r in val], marker=".", label="median |error|")
    axes[2].set(title="validation HC error (mm)", xlabel="epoch")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def train(cfg: TrainConfig) -> dict[str, float]:
    """Train a model as configured; returns the best validation metrics."""
    return Trainer(cfg).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m models.training.train``: parse, train, print the best validation metrics as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    best = train(config_from_args(build_parser().parse_args(argv)))
    print(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
