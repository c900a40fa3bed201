"""``fetalhc train`` on a tiny phantom HC18 folder: split by subject, logs, curves, weights, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.segmentation.weights import load_weights
from models.training.hc18 import load_cases, split_by_subject, subject_of
from models.training.train import train
from models.training.train_config import TrainConfig
from tests.models.hc18_support import write_hc18_folder

PHANTOMS = tuple((f"{900 + i}_{'2' if i % 3 == 2 else ''}HC.png", 120.0 + 25 * i, i) for i in range(8))


def test_subject_of_and_split_never_divides_a_subject(tmp_path: Path) -> None:
    assert subject_of("012_2HC.png") == "012" and subject_of("012_HC.png") == "012"
    with pytest.raises(ValueError, match="not an HC18 file name"):
        subject_of("scan.png")
    write_hc18_folder(tmp_path, PHANTOMS)
    cases = load_cases(tmp_path)
    for seed in range(5):
        train_cases, val_cases = split_by_subject(cases, 0.3, seed)
        assert {c.subject for c in train_cases}.isdisjoint({c.subject for c in val_cases})
        assert len(train_cases) + len(val_cases) == len(cases)
    assert split_by_subject(cases, 0.3, 1) == split_by_subject(cases, 0.3, 1)


def test_train_writes_split_log_curves_and_loadable_weights(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    write_hc18_folder(data, PHANTOMS)
    cfg = TrainConfig(data=data, out=out, input_size=(32, 48), epochs=2, batch_size=2, val_every=1,
                      val_fraction=0.3, threads=1, arch_kwargs={"channels": [4, 8, 16], "strides": [2, 2],
                                                                "num_res_units": 1})
    best = train(cfg)

    split = json.loads((out / "split.json").read_text())
    assert split["val"] and not set(split["train"]) & set(split["val"])
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["val_adf_mm"]) >= 0 for r in rows)
    assert (out / "curves.png").stat().st_size > 1000
    model = load_weights(out / "best.pt")
    assert model.input_size == (32, 48) and len(model.model_version) == 64
    assert model.meta["validation"]["val_adf_mm"] == pytest.approx(best["val_adf_mm"])

    # Resume continues from the saved epoch with the same history.
    resumed = TrainConfig(**{**cfg.__dict__, "epochs": 3, "resume": out / "last.pt"})
    train(resumed)
    with open(out / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]


def test_command_line_sets_channels_workers_and_the_shipped_input_size() -> None:
    from models.training.train_config import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(
        ["--data", "d", "--channels", "24", "48", "96", "--workers", "3"]))
    assert cfg.arch_kwargs == {"channels": [24, 48, 96]} and cfg.workers == 3
    assert cfg.input_size == load_weights().input_size  # defaults train what is shipped


def test_light_augmentation_keeps_pose_small_and_drops_shadows_and_speckle() -> None:
    from monai.transforms import RandAffined, RandCoarseDropoutd, RandGaussianNoised

    from models.training.train import train_transforms
    from models.training.train_config import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--data", "d", "--augment", "light"])).augment == "light"
    standard, light = train_transforms((64, 96)), train_transforms((64, 96), "light")
    kinds = [type(t) for t in light.transforms]
    assert RandCoarseDropoutd not in kinds and RandGaussianNoised not in kinds
    assert RandCoarseDropoutd in [type(t) for t in standard.transforms]
    [pose] = [t for t in light.transforms if isinstance(t, RandAffined)]
    [wide] = [t for t in standard.transforms if isinstance(t, RandAffined)]
    small, large = pose.rand_affine.rand_affine_grid, wide.rand_affine.rand_affine_grid
    assert small.rotate_range[0] < large.rotate_range[0] and small.scale_range[0] < large.scale_range[0]
    with pytest.raises(ValueError, match="standard, light"):
        train_transforms((64, 96), "heavy")


def test_ema_edge_loss_and_extra_data_train_only_on_the_training_side(tmp_path: Path) -> None:
    import torch

    data, extra, out = tmp_path / "data", tmp_path / "extra", tmp_path / "run"
    write_hc18_folder(data, PHANTOMS)
    write_hc18_folder(extra, tuple((f"{700 + i}_HC.png", 150.0 + 20 * i, 20 + i) for i in range(3)))
    cfg = TrainConfig(data=data, out=out, input_size=(32, 48), epochs=1, batch_size=2, val_every=1,
                      val_fraction=0.3, threads=1, ema_decay=0.9, boundary_weight=4.0, extra_data=[extra],
                      arch_kwargs={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1})
    train(cfg)

    split = json.loads((out / "split.json").read_text())
    plain = split_by_subject(load_cases(data), 0.3, cfg.seed)
    assert split["val"] == sorted(c.name for c in plain[1])  # the extra folder leaves the split alone
    assert split["extra_train"] == {str(extra): ["700_HC.png", "701_HC.png", "702_HC.png"]}
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["step"] == (len(plain[0]) + 3) // 2  # the extra images are trained on
    assert int(last["ema"]["n_averaged"]) == last["step"]  # averaged after every step
    # best.pt (one epoch: that epoch's) holds the moving average, not the raw weights.
    best = torch.load(out / "best.pt", weights_only=True)["state_dict"]
    key = next(k for k in last["net"] if k.endswith("conv.weight"))
    assert torch.equal(best[key], last["ema"]["module." + key].cpu())
    assert not torch.equal(best[key], last["net"][key].cpu())
