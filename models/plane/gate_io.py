"""The trained head-plane gate: its file (one torch file) and the gate that scores with it."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import WeightsError
from models.geometry.ellipse import Ellipse
from models.plane.net import build_plane_net, plane_logits
from models.plane.skull_echo import FEATURES, skull_features
from models.plane.verdict import HeadPlaneGate, PlaneVerdict

DESIGNS = ("cnn", "skull_echo", "fused")


@dataclass(frozen=True)
class LogisticModel:
    """Logistic regression on standardised inputs: logit = w . (x - mean) / std + b.

    The skull-echo model takes ``FEATURES``; the fusion takes (CNN logit, skull-echo logit).
    """

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logit of "head plane" for each row of ``features``."""
        return ((features - self.mean) / self.std) @ self.weights + self.bias

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, for the gate file."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "weights": self.weights.tolist(),
                "bias": float(self.bias)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticModel:
        """Inverse of ``as_dict``."""
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64),
                   np.asarray(d["weights"], np.float64), float(d["bias"]))


def fuse(fusion: LogisticModel, cnn_logit: np.ndarray, echo_logit: np.ndarray) -> np.ndarray:
    """The fused design's logit from the two designs' logits."""
    return fusion.logits(np.stack([np.asarray(cnn_logit, np.float64), np.asarray(echo_logit, np.float64)], axis=1))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow warnings."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


class TrainedGate(HeadPlaneGate):
    """The shipped gate: a CNN logit and a skull-echo logit, fused (or one alone, per ``design``)."""

    def __init__(self, net: nn.Module, input_size: tuple[int, int], echo: LogisticModel, fusion: LogisticModel,
                 design: str, threshold: float, device: torch.device | str = "cpu",
                 meta: dict[str, Any] | None = None) -> None:
        if design not in DESIGNS:
            raise ValueError(f"gate design {design!r}; choose one of: {', '.join(DESIGNS)}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"gate threshold {threshold} must lie strictly between 0 and 1")
        self.net, self.input_size, self.echo, self.fusion, self.design = net, input_size, echo, fusion, design
        self.threshold, self.device, self.meta = float(threshold), device, dict(meta or {})
        self.forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the CNN through another backend

    def with_threshold(self, threshold: float) -> TrainedGate:
        """The same gate at another operating point."""
        gate = TrainedGate(self.net, self.input_size, self.echo, self.fusion, self.design, threshold, self.device,
                           self.meta)
        gate.forward = self.forward
        return gate

    def with_forward(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> TrainedGate:
        """The same gate with its CNN run by ``forward`` (e.g. ``models.segmentation.backends.forward_of`` its
        network)."""
        gate = self.with_threshold(self.threshold)
        gate.forward = forward
        return gate

    def logits(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> dict[str, np.ndarray]:
        """Each design's logit for each image."""
        cnn = plane_logits(self.forward or self.net, images, self.input_size, self.device)
        feats = np.stack([skull_features(img, e) for img, e in zip(images, ellipses_px)]) if images else \
            np.zeros((0, len(FEATURES)))
        return self.logits_from(cnn, feats)

    def logits_from(self, cnn: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        """Each design's logit from the CNN's logits (float32, as ``plane_logits``) and the ``FEATURES`` rows."""
        cnn = np.asarray(cnn).astype(np.float64)
        echo = self.echo.logits(features)
        return {"cnn": cnn, "skull_echo": echo, "fused": fuse(self.fusion, cnn, echo)}

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> list[PlaneVerdict]:
        """One verdict per image (see ``HeadPlaneGate``)."""
        if not images:
            return []
        return self.verdicts_of(self.logits(images, ellipses_px))

    def verdicts_of(self, logits: dict[str, np.ndarray]) -> list[PlaneVerdict]:
        """The verdicts of ``logits`` (``logits`` or ``logits_from``) at this gate's design and threshold."""
        return [PlaneVerdict(float(p), self.threshold) for p in sigmoid(logits[self.design])]


def write_gate(path: Path, net: nn.Module, input_size: tuple[int, int], net_kwargs: dict[str, Any],
               echo: LogisticModel, fusion: LogisticModel, design: str, threshold: float,
               meta: dict[str, Any]) -> None:
    """Save a gate: network tensors (float16), skull-echo and fusion models, design and threshold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()}
    torch.save({"kind": "fetalhc-head-plane-gate", "input_size": list(input_size), "net_kwargs": net_kwargs,
                "state_dict": state, "skull_echo": echo.as_dict(), "fusion": fusion.as_dict(), "features": list(FEATURES), "design": design,
                "threshold": float(threshold), "meta": meta}, path)


def read_gate(path: Path, device: torch.device | str = "cpu") -> TrainedGate:
    """Load a gate written by ``write_gate``.

    Raises:
        WeightsError: unreadable, not a gate, or made with other skull-echo features.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("kind") != "fetalhc-head-plane-gate":
            raise KeyError("kind")
        if tuple(blob["features"]) != FEATURES:
            raise ValueError("the gate was trained on other skull-echo features")
        size = (int(blob["input_size"][0]), int(blob["input_size"][1]))
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in blob["net_kwargs"].items()}
        net = build_plane_net(size, **kwargs)
        net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError, ValueError, OSError, AttributeError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"head-plane gate {path} cannot be loaded: {exc}") from exc
    net.eval().to(device)
    threshold = float(blob["threshold"])
    if not math.isfinite(threshold):
        raise WeightsError(f"head-plane gate {path} has no valid threshold")
    return TrainedGate(net, size, LogisticModel.from_dict(blob["skull_echo"]), LogisticModel.from_dict(blob["fusion"]),
                       str(blob["design"]), threshold, device, dict(blob["meta"]))
