"""Saving and loading model weights: one file holds the network's name, settings and tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.errors import WeightsError
from models.segmentation.network import build_network

SHIPPED_WEIGHTS = Path(__file__).parents[1] / "weights" / "hc18_unet.pt"  # models/weights/, the data folder


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference, with what identifies it on every results row."""

    net: nn.Module
    arch: str
    input_size: tuple[int, int]
    model_name: str
    model_version: str  # sha256 of the weights file
    meta: dict[str, Any]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    path: Path, net: nn.Module, arch: str, arch_kwargs: dict[str, Any], input_size: tuple[int, int],
    meta: dict[str, Any] | None = None, half: bool = False,
) -> str:
    """Write the network's weights with everything needed to rebuild it; returns the sha256."""
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"arch": arch, "arch_kwargs": arch_kwargs, "input_size": list(input_size), "meta": meta or {},
         "state_dict": state},
        path,
    )
    return file_sha256(path)


def load_weights(path: str | Path | None = None, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a weights file (the shipped model when ``path`` is None) in eval mode on ``device``.

    Raises:
        WeightsError: missing or unreadable file, or tensors that do not fit the network.
    """
    path = Path(path) if path else SHIPPED_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; set FETALHC_WEIGHTS or run 'fetalhc train'")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = build_network(blob["arch"], **blob["arch_kwargs"])
        net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(f"weights file {path} cannot be loaded: {exc}") from exc
    net.eval().to(device)
    return LoadedModel(
        net=net,
        arch=blob["arch"],
        input_size=(int(blob["input_size"][0]), int(blob["input_size"][1])),
        model_name=str(blob["meta"].get("model_name", blob["arch"])),
        model_version=file_sha256(path),
        meta=dict(blob["meta"]),
    )


@lru_cache(maxsize=4)
def cached_model(path: str | None, device: str) -> LoadedModel:
    """One loaded model per (weights, device) in this process (worker processes call this)."""
    return load_weights(path, device)
