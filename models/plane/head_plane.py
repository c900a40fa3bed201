"""The head-plane gate: the probability that an image is a fetal head biometry plane, and its verdict.

An obstetric archive is mostly other anatomy (abdomen, femur, thorax, cervix...). The segmentation
network finds "a head" in many of them, so before an HC is stored the gate asks whether the image
is a head biometry plane (trans-thalamic, trans-ventricular or trans-cerebellar) at all. It joins
two kinds of evidence (``models/weights/MODEL_CARD.md``, "Head-plane gate"):

- the whole image, downsized, through a small MONAI classifier (``models.plane.net``);
- the skull echo along the fitted ellipse: a closed bright ring around a darker brain, and the
  midline (``models.plane.skull_echo``).

A logistic layer turns both into one probability; the operating threshold was chosen on HC18
validation heads alone (at least 99% of them pass).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from models.errors import WeightsError
from models.plane.gate_io import read_gate
from models.plane.verdict import HeadPlaneGate, PlaneVerdict
from models.segmentation.backends import Backend, forward_of, resolve_backend
from models.segmentation.weights import file_sha256

SHIPPED_GATE = Path(__file__).parents[1] / "weights" / "head_plane_gate.pt"  # models/weights/, the data folder


@lru_cache(maxsize=4)
def load_gate(path: str | None = None, device: str = "cpu", backend: str = "torch") -> HeadPlaneGate:
    """The gate saved at ``path`` (the shipped one when None), loaded once per process.

    ``backend`` (as ``FETALHC_BACKEND``): an exported backend runs the gate's CNN too, in float32 (its
    export cached by the gate file's sha256 beside the segmentation model's); the skull-echo part is NumPy.

    Raises:
        WeightsError: the file is missing or does not hold a gate.
        BackendUnavailable: ``backend`` cannot run here.
    """
    file = Path(path) if path else SHIPPED_GATE
    if not file.is_file():
        raise WeightsError(f"head-plane gate {file} does not exist; set FETALHC_HEAD_PLANE_GATE=off or train one "
                           "with 'python -m models.training.train_gate'")
    gate = read_gate(file, device)
    if resolve_backend(backend, device) is Backend.TORCH:
        return gate
    forward = forward_of(gate.net, gate.input_size, f"gate-{file_sha256(file)}", backend, device, precision="f32")
    return gate.with_forward(forward)


__all__ = ["SHIPPED_GATE", "HeadPlaneGate", "PlaneVerdict", "load_gate"]
