"""SonoNet-16 (Baumgartner et al., IEEE TMI 2017): the authors' fetal standard-plane classifier, in PyTorch.

Fourteen classes (13 mid-trimester standard planes and background), trained by its authors on about
2,700 anomaly-scan videos of one UK hospital (GE Voluson E8) and published with their weights under the
Apache License 2.0 (``baumgach/SonoNet-weights``). The weights are not shipped with fetalhc: a deployment
points ``FETALHC_PLANE_CLASSIFIER`` at its own copy of ``SonoNet16.npz`` (``load_plane_classifier``).

The network, as the authors describe it: thirteen 3 x 3 convolutions without bias, each with batch
normalisation and ReLU, in blocks of 16-16 | 32-32 | 64-64-64 | 128-128-128 | 128-128-128 with a 2 x 2
max-pool after each of the first four; a 1 x 1 convolution to 64 channels (batch norm, ReLU), a 1 x 1
convolution to 14 (batch norm) and the mean over all positions. The file's batch norms are folded into
the convolutions here (``x * inv_std * gamma + (beta - mean * inv_std * gamma)``: the same function).

Example:
    >>> clf = load_plane_classifier("/srv/fetalhc/SonoNet16.npz")             # doctest: +SKIP
    >>> [p.label for p in clf.classify([grey_image])]                       # doctest: +SKIP
    [<PlaneClass.BRAIN_TV: 'brain_tv'>]
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from models.segmentation.backends import Backend, ForwardPass, Precision, forward_of
from models.errors import WeightsError
from models.plane.classes import CLASSES, HEAD_CLASSES, PlaneClass
from models.segmentation.weights import file_sha256

log = logging.getLogger(__name__)

# sha256 of SonoNet16.npz as published in baumgach/SonoNet-weights (commit 6c4df399).
PUBLISHED_SHA256 = "bbbf9dde2b3af686c247a3074d890ceb685cd63fc1fc2af7e704edc07810c53f"
INPUT_SIZE = (224, 288)  # rows, columns: the authors' training size
BLOCKS = ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128), (128, 128, 128))
ADAPTATION = 64
N_CLASSES = 14
LIT_FRACTION = 0.03  # of the grey range: above it a pixel is part of the picture, not the black margin


HEAD_INDEX = tuple(CLASSES.index(c) for c in HEAD_CLASSES)
BACKGROUND_INDEX = CLASSES.index(PlaneClass.BACKGROUND)


def _conv_shapes() -> list[tuple[int, int, int]]:
    """(out, in, kernel) of the fifteen convolutions, in the file's order."""
    shapes, cin = [], 1
    for block in BLOCKS:
        for width in block:
            shapes.append((width, cin, 3))
            cin = width
    return [*shapes, (ADAPTATION, cin, 1), (N_CLASSES, ADAPTATION, 1)]


def expected_shapes() -> list[tuple[int, ...]]:
    """The shape of each of the file's 75 arrays: per convolution its kernel, then beta, gamma, mean, inv_std."""
    out: list[tuple[int, ...]] = []
    for cout, cin, k in _conv_shapes():
        out += [(cout, cin, k, k), (cout,), (cout,), (cout,), (cout,)]
    return out


class SonoNet16(nn.Module):
    """SonoNet-16 with folded batch norms: (N, 1, H, W) standardised grey images in, (N, 14) logits out.

    H and W must be multiples of 16. ``class_maps`` gives the (N, 14, H/16, W/16) map before the mean.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        shapes = _conv_shapes()
        i = 0
        for b, block in enumerate(BLOCKS):
            for _ in block:
                cout, cin, k = shapes[i]
                layers += [nn.Conv2d(cin, cout, k, padding=1), nn.ReLU(inplace=True)]
                i += 1
            if b < len(BLOCKS) - 1:
                layers.append(nn.MaxPool2d(2, 2))
        cout, cin, _ = shapes[i]
        layers += [nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True)]
        cout, cin, _ = shapes[i + 1]
        layers.append(nn.Conv2d(cin, cout, 1))
        self.layers = nn.Sequential(*layers)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The 14-channel map before the mean (where each class is seen)."""
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 14 logits of each image."""
        return self.class_maps(x).mean(dim=(2, 3))

    def convolutions(self) -> list[nn.Conv2d]:
        """The fifteen convolutions, in the file's order."""
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]


def read_arrays(path: Path) -> list[np.ndarray]:
    """The 75 arrays of a SonoNet-16 ``.npz``, checked for their number, names, shapes and finite values.

    Raises:
        WeightsError: not an ``.npz`` (or damaged), or arrays that are not SonoNet-16's.
    """
    shapes = expected_shapes()
    try:
        with np.load(path, allow_pickle=False) as blob:
            names = set(blob.files)
            wanted = [f"arr_{i}" for i in range(len(shapes))]
            if names != set(wanted):
                raise WeightsError(f"plane classifier {path} holds {len(names)} arrays, not SonoNet-16's "
                                   f"{len(shapes)} (arr_0 ... arr_{len(shapes) - 1})")
            arrays = [np.asarray(blob[name]) for name in wanted]
    except WeightsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"plane classifier {path} is not a readable .npz file ({type(exc).__name__}: {exc}); "
                           "download SonoNet16.npz again") from exc
    for i, (array, shape) in enumerate(zip(arrays, shapes)):
        if tuple(array.shape) != shape:
            raise WeightsError(f"plane classifier {path}: arr_{i} has shape {tuple(array.shape)}, SonoNet-16 needs "
                               f"{shape}; this is not SonoNet16.npz")
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise WeightsError(f"plane classifier {path}: arr_{i} is not finite floating-point numbers")
    return arrays


def build_sononet(arrays: Sequence[np.ndarray]) -> SonoNet16:
    """SonoNet-16 (eval mode, CPU) with the file's arrays, each batch norm folded into its convolution."""
    net = SonoNet16()
    with torch.no_grad():
        for j, conv in enumerate(net.convolutions()):
            kernel, beta, gamma, mean, inv_std = (np.asarray(a, np.float64) for a in arrays[5 * j:5 * j + 5])
            scale = gamma * inv_std
            conv.weight.copy_(torch.from_numpy(kernel * scale[:, None, None, None]))
            conv.bias.copy_(torch.from_numpy(beta - mean * scale))
    return net.eval()


# -- preprocessing ---------------------------------------------------------------------------------------------


# Screens whose layout is known, by (rows, columns): the rows and columns of the picture on them. SonoNet-16
# was trained on GE Voluson E8 screens cropped so by its authors (their 975 x 735 screen export).
KNOWN_SCREENS: dict[tuple[int, int], tuple[int, int, int, int]] = {(735, 975): (115, 734, 81, 874)}


def picture_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Rows [r0, r1) and columns [c0, c1) of the ultrasound picture to classify.

    On a screen of a known layout (``KNOWN_SCREENS``: the authors' GE Voluson E8 export) the authors' own
    crop; otherwise the image less its black margins (rows and columns with nothing lit). In the pipeline
    a DICOM image with an ultrasound region is already cut to that region. No generic crop of vendor text
    is tried: SonoNet-16's answers move with its field of view (a crop that takes the sector alone, text
    bars left out, changed 5 of its 13 example answers), so an unknown screen is classified whole.
    """
    known = KNOWN_SCREENS.get((int(grey.shape[0]), int(grey.shape[1])))
    if known is not None:
        return known
    lo, hi = float(grey.min()), float(grey.max())
    lit = grey > lo + LIT_FRACTION * (hi - lo)
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if len(rows) < 16 or len(cols) < 16:
        return 0, grey.shape[0], 0, grey.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def to_grey(image: np.ndarray) -> np.ndarray:
    """A 2-D float32 grey image on the image's own scale (colour: the mean of R, G, B, as the authors)."""
    if image.ndim == 3:
        image = image[..., :3].astype(np.float32).mean(axis=2)
    if image.ndim != 2:
        raise ValueError(f"expected a grey or colour image, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def prepare(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE, crop: bool = True) -> np.ndarray:
    """The network's (1, rows, cols) float32 input: grey, cut to the picture (``picture_box``), resized
    bilinearly to ``size``, standardised per image and multiplied by 255 (the authors' preprocessing)."""
    grey = to_grey(image)
    if crop:
        r0, r1, c0, c1 = picture_box(grey)
        grey = grey[r0:r1, c0:c1]
    x = cv2.resize(np.ascontiguousarray(grey), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    std = float(x.std())
    x = (x - float(x.mean())) / (std if std > 1e-6 else 1.0) * 255.0
    return x[None].astype(np.float32)


# -- the classifier -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaneProbabilities:
    """SonoNet-16's answer for one image: the 14 probabilities in ``CLASSES`` order."""

    probabilities: tuple[float, ...]

    @property
    def label(self) -> PlaneClass:
        """The most probable class."""
        return CLASSES[int(np.argmax(self.probabilities))]

    @property
    def probability(self) -> float:
        """The most probable class's probability."""
        return float(max(self.probabilities))

    @property
    def head(self) -> float:
        """The probability of a head biometry plane (trans-cerebellar + trans-ventricular)."""
        return float(sum(self.probabilities[i] for i in HEAD_INDEX))

    @property
    def background(self) -> float:
        """The probability of none of the standard planes."""
        return float(self.probabilities[BACKGROUND_INDEX])

    @property
    def other_plane(self) -> float:
        """The probability of another standard plane (neither a head plane nor background)."""
        return max(0.0, 1.0 - self.head - self.background)

    def as_dict(self) -> dict[str, float]:
        """``{class: probability}`` (4 decimals), for the row's ``plane_probabilities``."""
        return {c.value: round(float(p), 4) for c, p in zip(CLASSES, self.probabilities)}


class PlaneClassifier:
    """SonoNet-16 loaded from a file, run through an inference backend in batches."""

    def __init__(self, net: SonoNet16, sha256: str, forward: ForwardPass, path: str = "",
                 batch_size: int = 8) -> None:
        self.net, self.sha256, self.forward, self.path, self.batch_size = net, sha256, forward, path, batch_size

    @property
    def backend(self) -> Backend:
        """The backend that runs the network."""
        return self.forward.backend

    @property
    def precision(self) -> Precision:
        """The arithmetic the network runs in (f32, or bf16 where asked and available)."""
        return getattr(self.forward, "precision", Precision.F32)

    @property
    def version(self) -> str:
        """The weights file's sha256."""
        return self.sha256

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 14) logits of 2-D grey (or colour) images, in batches of ``batch_size``."""
        if not images:
            return np.zeros((0, N_CLASSES), np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([prepare(img) for img in images[start:start + self.batch_size]])
            out.append(self.forward(batch).float().cpu().numpy())
        return np.concatenate(out).reshape(len(images), N_CLASSES)

    def classify(self, images: Sequence[np.ndarray]) -> list[PlaneProbabilities]:
        """The 14 probabilities of each image (softmax of ``logits``)."""
        z = self.logits(images).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return [PlaneProbabilities(tuple(float(v) for v in row)) for row in p]


def load_plane_classifier(path: str | Path, backend: str = "torch", device: str = "cpu", strict: bool = False,
                          cache_dir: str | Path | None = None,
                          precision: str | Precision = Precision.F32) -> PlaneClassifier:
    """SonoNet-16 from ``path`` (checked: ``read_arrays``), run through ``backend`` (as ``FETALHC_BACKEND``).

    A well-formed file whose sha256 is not the published one (``PUBLISHED_SHA256``) is loaded with a
    warning (a hospital may fine-tune SonoNet-16 on its own scans, or keep a converted copy), or refused with
    ``strict``. An exported backend's model is cached by the file's sha256 in ``cache_dir`` (default: beside
    the segmentation model's, ``models.segmentation.backends.default_cache_dir``). ``precision``
(``FETALHC_PLANE_CLASSIFIER_PRECISION``): f32 by default; bf16 or auto as ``FETALHC_PRECISION`` means them
(``models.segmentation.backends.resolve_precision``). bf16 is 3-4 x faster on AMX but moves near-tie answers:
on the 2,075 HC18 and held-out images the plane decision was tuned on it changed 10 labels and 4 outcomes.

    Raises:
        WeightsError: the file is missing, damaged, not an ``.npz`` or not SonoNet-16's arrays; or, with
            ``strict``, not the published file.
        BackendUnavailable: ``backend`` cannot run here.
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"plane classifier {file} does not exist; download SonoNet16.npz (README, 'Plane "
                           "classifier') or unset FETALHC_PLANE_CLASSIFIER")
    sha = file_sha256(file)
    net = build_sononet(read_arrays(file))
    if sha != PUBLISHED_SHA256:
        message = (f"plane classifier {file} has the shape of SonoNet-16 but is not the published SonoNet16.npz "
                   f"(sha256 {sha[:12]}..., published {PUBLISHED_SHA256[:12]}...)")
        if strict:
            raise WeightsError(message)
        log.warning("%s: using it; its sha256 is recorded on every row", message)
    net.to(str(device))
    forward = forward_of(net, INPUT_SIZE, f"sononet16-{sha}", backend, str(device), cache_dir, precision=precision)
    return PlaneClassifier(net, sha, forward, str(file))


def plane_classifier_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` cannot serve as SonoNet-16 (missing, damaged, other arrays), or None when it can.

    Reads the arrays once per (path, size, modification time): cheap enough for every health check.
    """
    file = Path(path)
    if not file.is_file():
        return f"plane classifier {file} does not exist"
    stat = file.stat()
    return _problem(str(file), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _problem(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        read_arrays(Path(path))
    except WeightsError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=2)
def cached_plane_classifier(path: str, backend: str = "auto", device: str = "cpu",
                            precision: str = "f32") -> PlaneClassifier:
    """One classifier per (file, backend, device, precision) in this process (worker processes call this)."""
    return load_plane_classifier(path, backend, device, precision=precision)
