"""Train the head-plane gate: the CNN, the skull-echo model, and the threshold from HC18 validation heads.

``python -m models.training.train_gate --shared ../shared --out runs/gate`` reads (and caches) every gate
image, trains both designs on the training side, fuses them, chooses the operating threshold on
HC18 validation heads alone and writes ``gate.pt`` plus ``report.json`` (``models.training.gate_report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.plane.gate_io import LogisticModel, fuse, write_gate
from models.plane.net import INPUT_SIZE, NET_KWARGS, build_plane_net
from models.segmentation.preprocess import normalise
from models.segmentation.weights import SHIPPED_WEIGHTS, load_weights
from models.training.gate_data import GateItem, all_items, group_split
from models.training.gate_prepare import Prepared, prepare, refresh_features
from models.training.gate_report import design_report

log = logging.getLogger(__name__)
# Below the lowest HC18 validation head's logit by this much: every validation head passes, with a
# margin for heads from other scanners. Chosen before looking at anything but HC18 validation heads.
THRESHOLD_MARGIN = 0.25


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50,
                 sample_weight: np.ndarray | None = None) -> LogisticModel:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    sw = np.ones(len(y)) if sample_weight is None else sample_weight
    reg = np.full(z.shape[1], l2 * sw.sum())
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (sw * (p - y)) + reg * w
        hess = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return LogisticModel(mean, std, w[:-1], float(w[-1]))


def balance_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights that give both classes the same total."""
    pos = max(int(y.sum()), 1)
    neg = max(len(y) - pos, 1)
    return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))


def augment(thumbs: torch.Tensor, centres: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random zoom towards the fitted head (or anywhere), rotation, flips, contrast, noise, screen text.

    ``thumbs``: (n, 1, H, W) floats in [0, 1] (larger than the network input); ``centres``: (n, 2)
    the ellipse centre as fractions (NaN: none). Returns (n, 1, *INPUT_SIZE), not yet normalised.
    """
    n = thumbs.shape[0]
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731 - a local shorthand
    zoom = torch.exp(r(math.log(0.9), math.log(1.9)))  # >1: zoom in (a head filling the frame)
    ang = r(-0.35, 0.35)
    c = torch.nan_to_num(centres * 2 - 1, nan=0.0)
    pull = r(0.0, 1.0)[:, None] * (1 - 1 / zoom)[:, None]
    shift = c * pull + (torch.rand(n, 2, generator=gen) - 0.5) * 0.2
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, *INPUT_SIZE), align_corners=False)
    out = F.grid_sample(thumbs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    flip_h = torch.rand(n, generator=gen) < 0.5
    out[flip_h] = out[flip_h].flip(-1)
    flip_v = torch.rand(n, generator=gen) < 0.2
    out[flip_v] = out[flip_v].flip(-2)
    gamma = torch.exp(r(math.log(0.6), math.log(1.6)))[:, None, None, None]
    out = out.clamp(0, 1) ** gamma * r(0.7, 1.3)[:, None, None, None]
    out = out + torch.randn(out.shape, generator=gen) * r(0.0, 0.05)[:, None, None, None]
    blur = torch.rand(n, generator=gen) < 0.25
    if blur.any():
        out[blur] = F.avg_pool2d(out[blur], 3, stride=1, padding=1)
    _screen_text(out, gen)
    return out.clamp(0, 1)


def _screen_text(batch: torch.Tensor, gen: torch.Generator) -> None:
    """Burn bright text-like marks and ruler ticks near the edges of about half the images, in place."""
    n, _, h, w = batch.shape
    for i in range(n):
        if torch.rand(1, generator=gen).item() < 0.5:
            continue
        for _ in range(int(torch.randint(3, 14, (1,), generator=gen))):
            side = torch.rand(1, generator=gen).item()
            rh, rw = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(2, 18, (1,), generator=gen))
            if side < 0.6:  # text in a top corner or along the top
                y = int(torch.randint(0, max(h // 5, 1), (1,), generator=gen))
                x = int(torch.randint(0, w - rw, (1,), generator=gen))
            else:  # along a side (rulers, measurement tables)
                y = int(torch.randint(0, h - rh, (1,), generator=gen))
                x = int(torch.randint(0, max(w // 8, 1), (1,), generator=gen))
                x = x if side < 0.8 else w - rw - x
            batch[i, 0, y:y + rh, x:x + rw] = 0.7 + 0.3 * torch.rand(1, generator=gen).item()


def train_cnn(thumbs: np.ndarray, centres: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0,
              batch_size: int = 48, lr: float = 2e-3) -> torch.nn.Module:
    """Train the plane classifier on thumbnails; class balance through the loss's positive weight."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_plane_net(INPUT_SIZE)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(labels) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    x_all = torch.from_numpy(thumbs)[:, None]
    c_all = torch.from_numpy(centres)
    y_all = torch.from_numpy(labels.astype(np.float32))
    pos_weight = torch.tensor((len(labels) - labels.sum()) / max(labels.sum(), 1))
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(labels), generator=gen)
        total, t0 = 0.0, time.time()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = normalise(augment(x_all[idx].float() / 255, c_all[idx], gen))
            loss = F.binary_cross_entropy_with_logits(net(x).reshape(-1), y_all[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        log.info("gate cnn epoch %d/%d loss %.4f (%.0f s)", epoch + 1, epochs, total / len(labels), time.time() - t0)
    return net.eval()


@torch.inference_mode()
def cnn_logits(net: torch.nn.Module, thumbs: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The CNN's logit for each cached thumbnail (resized to the network input, no augmentation)."""
    out = []
    for start in range(0, len(thumbs), batch_size):
        x = torch.from_numpy(thumbs[start:start + batch_size])[:, None].float() / 255
        x = F.interpolate(x, size=INPUT_SIZE, mode="bilinear", align_corners=False, antialias=True)
        out.append(net(normalise(x)).reshape(-1).numpy())
    return np.concatenate(out).astype(np.float64)


def fit_and_calibration_rows(items: Sequence[GateItem]) -> tuple[np.ndarray, np.ndarray]:
    """The training side split once more by group: four in five fit the two designs, the rest
    (``calibration``) fit how they are fused, on logits neither design was trained on."""
    train = np.array([i.split == "train" for i in items])
    calib = np.array([i.split == "train" and group_split(i.group + "/calibration") == "val" for i in items])
    return train & ~calib, calib


def threshold_from_heads(head_logits: np.ndarray, margin: float = THRESHOLD_MARGIN) -> float:
    """The probability threshold: ``margin`` below the lowest validation head's logit."""
    return float(1 / (1 + math.exp(-(float(np.min(head_logits)) - margin))))


def train_gate(shared: Path, out: Path, epochs: int = 12, design: str = "fused", seed: int = 0,
               refresh: bool = False) -> dict:
    """Prepare (or reuse) the cache, train both designs, report, and write ``out/gate.pt``."""
    items = all_items(shared, SHIPPED_WEIGHTS.with_suffix(".split.json"))
    cache = out / "gate_cache.npz"
    prep = Prepared.load(cache) if cache.is_file() else None
    if prep is None or prep.keys != [i.key for i in items]:
        prep = prepare(items, load_weights(), cached=prep)
        prep.save(cache)
    elif refresh:
        prep = refresh_features(prep, items)
        prep.save(cache)
    if epochs == 0:  # prepare only
        return {}
    labels = np.array([i.label for i in items])
    fit, calib = fit_and_calibration_rows(items)
    echo = fit_logistic(prep.features[fit], labels[fit], sample_weight=balance_weights(labels[fit]))
    net = train_cnn(prep.thumbs[fit], prep.centres[fit], labels[fit], epochs, seed)
    logits = {"cnn": cnn_logits(net, prep.thumbs), "skull_echo": echo.logits(prep.features)}
    pair = np.stack([logits["cnn"], logits["skull_echo"]], axis=1)
    fusion = fit_logistic(pair[calib], labels[calib], sample_weight=balance_weights(labels[calib]))
    logits["fused"] = fuse(fusion, logits["cnn"], logits["skull_echo"])
    val_heads = np.array([i.split == "val" and i.source == "hc18" for i in items])
    thresholds = {d: threshold_from_heads(v[val_heads]) for d, v in logits.items()}
    report = {d: design_report(items, v, thresholds[d]) for d, v in logits.items()}
    meta = {"trained": time.strftime("%Y-%m-%d"), "epochs": epochs, "seed": seed, "margin": THRESHOLD_MARGIN,
            "val_auc": report[design]["auc"]}
    write_gate(out / "gate.pt", net, INPUT_SIZE, dict(NET_KWARGS), echo, fusion, design, thresholds[design], meta)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    np.savez(out / "logits.npz", keys=np.array([i.key for i in items]), **logits)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.training.train_gate``."""
    parser = argparse.ArgumentParser(prog="python -m models.training.train_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"),
                        help="folder holding hc18/, us-negatives/ and other-heads/")
    parser.add_argument("--out", type=Path, default=Path("runs/gate"))
    parser.add_argument("--epochs", type=int, default=12, help="CNN epochs (0: only read and cache the images)")
    parser.add_argument("--design", choices=("cnn", "skull_echo", "fused"), default="fused")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refresh-features", action="store_true",
                        help="compute the skull-echo features again from the cached ellipses")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = train_gate(args.shared, args.out, args.epochs, args.design, args.seed, args.refresh_features)
    for name, rep in report.items():
        print(f"{name:11s} AUC {rep['auc']:.4f}  threshold {rep['threshold']:.4f}  "
              + "  ".join(f"{s}: {v['pass_rate']:.3f}" for s, v in rep["by_source"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

