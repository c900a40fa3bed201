"""Evaluation: metrics with known answers, plots, the HC18 submission CSV and ``fetalhc eval`` end to end."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.evaluation import (
    SUBMISSION_COLUMNS,
    ErrorStats,
    EvalConfig,
    ImageResult,
    bland_altman,
    default_subset,
    dice,
    ellipse_dice,
    evaluate,
    hausdorff_mm,
    hc_band,
    overlay_png,
    plot_bland_altman,
    plot_gallery,
    select_cases,
    submission_row,
    summarise,
    summarise_by_band,
    worst_cases,
)
from models.geometry.ellipse import Ellipse
from models.training.hc18 import Case
from tests.models.hc18_support import SPACING_MM, write_hc18_folder
from worker.cli import main as cli_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Names above HC18's 805 so that no phantom shares a name with the shipped weights' split file.
PHANTOMS = (("900_HC.png", 175.0, 1), ("901_HC.png", 230.0, 2), ("902_2HC.png", 140.0, 3))


def result(name: str, ref: float | None, pred: float | None, flags: tuple[str, ...] = (), **kw) -> ImageResult:
    status = "failed" if pred is None else ("needs_review" if flags else "measured")
    return ImageResult(name=name, image_path=Path(name), pixel_size_mm=0.1, shape=(54, 80), status=status,
                       ref_hc_mm=ref, pred_hc_mm=pred, flags=flags,
                       reason="no_head_found" if pred is None else None, **kw)


# -- metrics with known answers ---------------------------------------------------------------------------------

def test_dice_of_identical_ellipses_is_one_and_of_disjoint_is_zero() -> None:
    e = Ellipse.make(80, 50, 40, 25, 0.7)
    assert ellipse_dice(e, e, (100, 160)) == 1.0
    far = Ellipse.make(140, 50, 10, 8, 0.0)
    assert ellipse_dice(Ellipse.make(30, 50, 20, 15, 0.0), far, (100, 160)) == 0.0
    assert dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


def test_dice_of_concentric_circles_matches_area_ratio() -> None:
    inner, outer = Ellipse.make(200, 200, 80, 80, 0), Ellipse.make(200, 200, 100, 100, 0)
    expected = 2 * 80**2 / (80**2 + 100**2)
    assert ellipse_dice(inner, outer, (400, 400)) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize(("shift", "spacing", "expected_mm"), [
    ((3.0, 4.0), (0.2, 0.2), 1.0),  # 5 px at 0.2 mm
    ((0.0, 10.0), (0.1, 0.3), 3.0),  # anisotropic pixels: 10 rows of 0.3 mm
    ((12.0, 0.0), (0.1, 0.3), 1.2),
])
def test_hausdorff_of_a_shifted_ellipse_is_the_shift(shift: tuple[float, float], spacing: tuple[float, float],
                                                     expected_mm: float) -> None:
    # For a convex outline and its translate, the Hausdorff distance is the length of the translation.
    e = Ellipse.make(300, 200, 120, 80, 0.4)
    moved = Ellipse.make(e.cx + shift[0], e.cy + shift[1], e.a, e.b, e.angle)
    assert hausdorff_mm(e, moved, spacing) == pytest.approx(expected_mm, abs=0.005)
    assert hausdorff_mm(e, e, spacing) == pytest.approx(0.0, abs=1e-9)


def test_hausdorff_of_concentric_circles_is_the_radius_difference() -> None:
    assert hausdorff_mm(Ellipse.make(0, 0, 50, 50, 0), Ellipse.make(0, 0, 53, 53, 0), (0.5, 0.5)) == (
        pytest.approx(1.5, abs=1e-6))


def test_error_stats_on_a_hand_made_list() -> None:
    s = ErrorStats.from_errors([-3.0, 1.0, 2.0, -10.0, 5.0])
    assert s.n == 5
    assert s.adf_mm == pytest.approx(4.2)
    assert s.df_mm == pytest.approx(-1.0)
    assert s.median_abs_mm == pytest.approx(3.0)
    assert s.p95_abs_mm == pytest.approx(9.0)  # |e| sorted 1 2 3 5 10: 5 + 0.8 * (10 - 5)
    assert s.max_abs_mm == 10.0
    assert math.isnan(ErrorStats.from_errors([]).adf_mm)


def test_hc_bands_have_inclusive_lower_bounds() -> None:
    assert [hc_band(v) for v in (44.3, 99.99, 100.0, 249.9, 250.0, 346.4)] == [
        "<100", "<100", "100-250", "100-250", ">250", ">250"]
    with pytest.raises(ValueError):
        hc_band(-1.0)


def test_summarise_counts_failures_flags_and_silent_misses_by_band() -> None:
    results = [
        result("a", 80.0, 82.0),  # <100: +2
        result("b", 90.0, 105.0, ("low_confidence",)),  # <100: +15, flagged -> not silent
        result("c", 180.0, 168.0),  # 100-250: -12 unflagged -> silent miss
        result("d", 200.0, 201.0),  # 100-250: +1
        result("e", 300.0, None),  # >250: failed
        result("f", 260.0, 257.0),  # >250: -3
    ]
    overall = summarise(results)
    assert (overall.n_images, overall.measured, overall.failures, overall.needs_review) == (6, 5, 1, 1)
    assert overall.adf_mm == pytest.approx((2 + 15 + 12 + 1 + 3) / 5)
    assert overall.df_mm == pytest.approx((2 + 15 - 12 + 1 - 3) / 5)
    assert overall.adf_unflagged_mm == pytest.approx((2 + 12 + 1 + 3) / 4)
    assert (overall.off_10mm, overall.silent_misses) == (2, 1)
    assert overall.failure_reasons == {"no_head_found": 1}
    assert overall.flag_counts == {"low_confidence": 1}
    bands = summarise_by_band(results)
    assert [bands[k].n_images for k in ("<100", "100-250", ">250")] == [2, 2, 2]
    assert bands["<100"].adf_mm == pytest.approx(8.5)
    assert bands["100-250"].silent_misses == 1 and bands["<100"].silent_misses == 0
    assert bands[">250"].failures == 1 and bands[">250"].adf_mm == pytest.approx(3.0)
    assert [r.name for r in worst_cases(results, 3)] == ["e", "b", "c"]


def test_bland_altman_bias_and_limits() -> None:
    ref = [100.0, 150.0, 200.0, 250.0]
    ba = bland_altman([r + d for r, d in zip(ref, (3.0, 1.0, 3.0, 1.0))], ref)
    sd = float(np.std([3.0, 1.0, 3.0, 1.0], ddof=1))
    assert (ba.n, ba.bias_mm, ba.sd_mm) == (4, pytest.approx(2.0), pytest.approx(sd))
    assert (ba.lower_mm, ba.upper_mm) == (pytest.approx(2 - 1.96 * sd), pytest.approx(2 + 1.96 * sd))
    with pytest.raises(ValueError):
        bland_altman([1.0], [1.0])


def test_select_cases_by_split_file_names_file_and_all(tmp_path: Path) -> None:
    cases = [Case(tmp_path / n, 0.1, 150.0) for n in ("001_HC.png", "002_HC.png", "003_HC.png")]
    split = tmp_path / "w.split.json"
    split.write_text(json.dumps({"train": ["001_HC.png", "003_HC.png"], "val": ["002_HC.png"]}))
    assert default_subset(cases, split) == "val" and default_subset(cases, None) == "all"
    assert [c.name for c in select_cases(cases, "val", split)[0]] == ["002_HC.png"]
    assert select_cases(cases, "val", split)[1] is False
    assert select_cases(cases, "all", split)[1] is True  # trained-on images included
    names = tmp_path / "names.txt"
    names.write_text("# held out\n003_HC.png\n\n")
    assert [c.name for c in select_cases(cases, str(names), None)[0]] == ["003_HC.png"]
    with pytest.raises(ValueError, match="split file"):
        select_cases(cases, "val", None)
    with pytest.raises(ValueError, match="val, all or a file"):
        select_cases(cases, "nonsense", split)
    # Unlabelled images (the HC18 test set reuses training names) never select the split.
    assert default_subset([Case(tmp_path / "001_HC.png", 0.1, None)], split) == "all"


# -- pictures ---------------------------------------------------------------------------------------------------

def test_overlay_bland_altman_and_gallery_pngs(tmp_path: Path) -> None:
    image = (np.random.default_rng(0).random((54, 80)) * 255).astype(np.uint8)
    pred, ref = Ellipse.make(40, 27, 20, 14, 0.3), Ellipse.make(41, 27, 21, 14, 0.2)
    overlay_png(image, pred, ref, tmp_path / "one.png", "caption")
    buffer = io.BytesIO()
    overlay_png(image, pred, None, buffer, "no reference")
    assert (tmp_path / "one.png").read_bytes()[:8] == PNG_SIGNATURE and buffer.getvalue()[:8] == PNG_SIGNATURE

    ba = plot_bland_altman([101.0, 149.0, 205.0], [100.0, 150.0, 200.0], tmp_path / "ba.png", [False, False, True])
    assert ba.bias_mm == pytest.approx(5 / 3)
    assert (tmp_path / "ba.png").stat().st_size > 5000

    Image.fromarray(image).save(tmp_path / "x.png")
    results = [result("x.png", 150.0, 160.0, pred_ellipse_px=pred, ref_ellipse_px=ref),
               result("x.png", 150.0, None, ref_ellipse_px=ref)]
    results = [ImageResult(**{**r.__dict__, "image_path": tmp_path / "x.png"}) for r in results]
    assert len(plot_gallery(results, tmp_path / "gallery.png", n=5)) == 2
    assert (tmp_path / "gallery.png").read_bytes()[:8] == PNG_SIGNATURE


# -- submission CSV and end to end with the shipped weights ------------------------------------------------------

def test_submission_row_convention() -> None:
    row = submission_row("000_HC.png", Ellipse.make(60.0, 40.5, 20.0, 30.0, 0.25))
    assert list(row) == list(SUBMISSION_COLUMNS)
    # b > a given: axes swapped so that a is the longer one, the angle turned by pi/2.
    assert row == {"filename": "000_HC.png", "center_x_mm": "60.000000", "center_y_mm": "40.500000",
                   "semi_axes_a_mm": "30.000000", "semi_axes_b_mm": "20.000000",
                   "angle_rad": f"{0.25 + math.pi / 2:.6f}"}


def test_submission_csv_on_unlabelled_folder(tmp_path: Path) -> None:
    truth = write_hc18_folder(tmp_path / "test_set", PHANTOMS[:2], labelled=False)
    report = evaluate(EvalConfig(data=tmp_path / "test_set", out=tmp_path / "out",
                                 submission=tmp_path / "submission.csv", gallery=0))
    assert report.subset == "all" and len(report.images) == 2
    with open(tmp_path / "submission.csv", newline="") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == ",".join(SUBMISSION_COLUMNS)
    rows = list(csv.DictReader(lines))
    assert [r["filename"] for r in rows] == ["900_HC.png", "901_HC.png"]
    for row in rows:
        outer, hc = truth[row["filename"]]
        cx, cy, a, b, angle = (float(row[k]) for k in SUBMISSION_COLUMNS[1:])
        assert a >= b > 0 and 0 <= angle < math.pi
        # Centre in mm from the top-left, x along columns: the phantom's own centre.
        assert cx == pytest.approx(outer.cx * SPACING_MM, abs=3.0)
        assert cy == pytest.approx(outer.cy * SPACING_MM, abs=3.0)
    assert math.isnan(report.overall.adf_mm) and report.bland_altman is None


def test_cli_eval_json_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hc18_folder(tmp_path / "hc18", PHANTOMS)
    out = tmp_path / "eval"
    assert cli_main(["eval", "--data", str(tmp_path / "hc18"), "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"data", "subset", "model", "n_images", "overall", "by_band", "bland_altman", "acceptance",
            "outputs", "seconds"} <= set(report)
    assert report["subset"] == "all" and report["n_images"] == 3
    overall = report["overall"]
    assert {"adf_mm", "df_mm", "median_abs_mm", "p95_abs_mm", "dice", "hausdorff_mm", "failures", "needs_review",
            "silent_misses"} <= set(overall)
    assert overall["measured"] >= 1
    assert isinstance(overall["adf_mm"], float) and math.isfinite(overall["adf_mm"])
    assert set(report["by_band"]) == {"<100", "100-250", ">250"}
    for name in ("metrics.json", "per_image.csv", "bland_altman.png", "gallery.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [p[0] for p in PHANTOMS]
    assert {"pixel_size_mm", "ref_hc_mm", "pred_hc_mm", "error_mm", "dice", "hausdorff_mm", "quality", "flags",
            "status"} <= set(rows[0])


def test_plain_output_is_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hc18_folder(tmp_path / "hc18", PHANTOMS[:1])
    assert cli_main(["eval", "--data", str(tmp_path / "hc18"), "--out", str(tmp_path / "o"), "--gallery", "0"]) == 0
    text = capsys.readouterr().out
    assert "ADF" in text and "100-250 mm" in text and "acceptance" in text


def test_cli_help_does_not_import_torch() -> None:
    code = ("import sys, worker.cli; worker.cli.build_parser(); "
            "sys.exit(int(any(m in sys.modules for m in ('torch', 'matplotlib', 'models.evaluation.runner'))))")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3]).returncode == 0


@pytest.mark.hc18
def test_eval_on_real_hc18_validation_images(hc18_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", "--data", str(hc18_dir), "--limit", "4", "--json", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["subset"] == "val" and report["n_images"] == 4 and not report["includes_training_images"]
    assert math.isfinite(report["overall"]["adf_mm"]) and report["overall"]["dice"] > 0.8
