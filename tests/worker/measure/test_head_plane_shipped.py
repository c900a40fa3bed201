"""End to end through the shipped head-plane gate (``models/weights/head_plane_gate.pt``, on by default).

A head phantom (a bright skull ring) and the demo's real HC18 heads pass and are measured; the
demo's real non-head scans (PSFHS, POCUS lung) are set aside as ``not_head``; with ../shared,
HC18 validation heads pass and held-out negatives are refused (lung frames all, PSFHS views only
about half: the gate's known limit).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.plane.head_plane import SHIPPED_GATE, load_gate
from worker.cli import main
from worker.tools.demo import SAMPLES_DIR
from worker.tools.make_demo_samples import is_gate_validation_group
from worker.core.settings import get_settings

SHARED = Path(__file__).resolve().parents[4] / "shared"


@pytest.fixture()
def gate_on(fetalhc_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "on")
    get_settings.cache_clear()
    assert SHIPPED_GATE.is_file(), "the shipped gate is part of the repository"
    return fetalhc_env


def _process(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict[str, dict]:
    code = main(["process", "--json", *map(str, paths)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 0, rows
    return {Path(r["path"]).name: r for r in rows}


def test_the_head_phantom_passes_and_is_measured(gate_on: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_phantom(hc_mm=190.0, spacing_mm=0.15, angle=0.5, seed=3)
    path = write_us_image(tmp_path / "phantom.dcm", phantom.image, phantom.spacing_mm)
    row = _process(capsys, path)["phantom.dcm"]
    threshold = load_gate(None, "cpu").threshold
    assert row["status"] in ("measured", "needs_review"), row
    assert row["head_plane_score"] >= threshold
    assert row["hc_mm"] == pytest.approx(phantom.hc_mm, rel=0.08)


def test_the_demo_samples_heads_measured_against_true_hc_and_negatives_set_aside(
        gate_on: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = json.loads((SAMPLES_DIR / "samples.json").read_text())
    rows = _process(capsys, *(SAMPLES_DIR / e["file"] for e in entries))
    for e in entries:
        row = rows[e["file"]]
        if e["kind"] == "head":
            assert row["status"] in ("measured", "needs_review"), row
            assert row["hc_mm"] == pytest.approx(e["true_hc_mm"], rel=0.05), e["file"]
        else:
            assert (row["status"], row["reason"], row["hc_mm"]) == ("not_head", "not_head_plane", None), row
            assert row["detail"].startswith("not a head plane: head-plane score")


def test_make_demo_reports_the_negatives_set_aside(gate_on: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    gate_on.delenv("FETALHC_DATABASE_URL")  # the demo's own SQLite file under --out
    gate_on.setenv("FETALHC_HC18_DIR", str(tmp_path / "no_hc18"))
    gate_on.chdir(tmp_path)  # no ../shared/hc18 from here: the demo without the data set
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    report = capsys.readouterr().out
    assert "head-plane gate on" in report
    assert "images that are not head planes set aside as not_head: 2 of 2" in report
    assert "heads the head-plane gate refused" not in report
    assert "mean |error| over 7 measured heads" in report  # 4 HC18 heads, 3 phantoms


def _val_heads(n: int) -> list[tuple[str, np.ndarray, float]]:
    split = json.loads((Path(__file__).resolve().parents[3] / "models" / "weights" / "hc18_unet.split.json")
                       .read_text())["val"]
    sizes = {}
    with (SHARED / "hc18" / "training_set_pixel_size_and_HC.csv").open() as f:
        for row in csv.reader(f):
            if row and row[0] in split:
                sizes[row[0]] = float(row[1])
    names = sorted(split)[:: max(1, len(split) // n)][:n]
    return [(name, np.asarray(Image.open(SHARED / "hc18" / "training_set" / name).convert("L")), sizes[name])
            for name in names]


def test_hc18_validation_heads_pass_and_held_out_negatives_are_refused(
        gate_on: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (SHARED / "hc18" / "training_set").is_dir() or not (SHARED / "us-negatives").is_dir():
        pytest.skip("../shared/hc18 and ../shared/us-negatives are not here")
    for name, image, spacing in _val_heads(10):
        write_us_image(tmp_path / "heads" / name.replace(".png", ".dcm"), image, spacing)
    picked: dict[str, int] = {}
    with (SHARED / "us-negatives" / "manifest.csv").open(newline="") as f:
        for row in csv.DictReader(f):  # five validation groups of each source, one file each
            if is_gate_validation_group(row["group"]) and picked.get(row["source"], 0) < 5 \
                    and not any(row["group"] in p.name for p in (tmp_path / "negatives").glob("*")):
                image = np.asarray(Image.open(SHARED / "us-negatives" / row["file"]).convert("L"))
                write_us_image(tmp_path / "negatives" / f"{row['group']}.dcm", image, 0.35)
                picked[row["source"]] = picked.get(row["source"], 0) + 1
    heads = _process(capsys, tmp_path / "heads")
    negatives = _process(capsys, tmp_path / "negatives")
    assert len(heads) == 10 and len(negatives) == 10
    assert [n for n, r in heads.items() if r["status"] == "not_head"] == []
    shown = {n: (r["status"], r.get("head_plane_score")) for n, r in negatives.items()}
    refused = {n for n, r in negatives.items() if r["status"] == "not_head"}
    # The gate's validation figures (model card): lung frames are all refused, intrapartum PSFHS views
    # (a real fetal skull, seen from below) only about half: a known limit, not hidden here.
    assert {n for n in negatives if n.startswith("video-")} <= refused, shown
    assert len({n for n in refused if n.startswith("psfhs-")}) >= 2, shown
