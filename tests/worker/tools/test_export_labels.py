"""``fetalhc export-labels`` then ``fetalhc train --extra-data``: reviewed frames in HC18's layout, read back by the
HC18 loader (outline and HC agree), and a one-epoch training run that trains on them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from db import Measurement, ReviewDecision, session_scope
from models.geometry.ellipse import Ellipse
from models.training.hc18 import load_cases
from tests.models.hc18_support import write_hc18_folder
from tests.worker.review_support import REGION, store_flagged_scans
from worker.cli import main
from worker.core.settings import get_settings
from worker.measure.review import Decision, apply_review
from worker.tools.export_labels import square_frame


def _decide(url: str, ident: int, decision: Decision) -> None:
    with session_scope(url) as session:
        row = session.get(Measurement, ident)
        assert row is not None
        apply_review(session, row, "alice", decision, "intergrowth")


def test_reviewed_frames_export_in_hc18_layout_and_train(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = get_settings().database_url
    a = store_flagged_scans(url, tmp_path / "a", 2, patient_id="PA", hc_error_mm=-8.0)
    b = store_flagged_scans(url, tmp_path / "b", 3, patient_id="PB", first_seed=5, hc_error_mm=-8.0)
    (gate,) = store_flagged_scans(url, tmp_path / "c", 1, status="not_head", first_seed=9)
    truth = a[1].ellipse_mm.scaled(a[1].hc_mm / (a[1].hc_mm - 8.0), a[1].hc_mm / (a[1].hc_mm - 8.0))
    _decide(url, a[0].id, Decision(ReviewDecision.ACCEPTED))
    _decide(url, a[1].id, Decision(ReviewDecision.CORRECTED, Ellipse.make(a[1].ellipse_mm.cx, a[1].ellipse_mm.cy,
                                                                         truth.a, truth.b, truth.angle)))
    _decide(url, b[0].id, Decision(ReviewDecision.CORRECTED, hc_mm=b[0].hc_mm))
    _decide(url, b[1].id, Decision(ReviewDecision.REJECTED_NOT_HEAD))  # not a label
    _decide(url, b[2].id, Decision(ReviewDecision.ACCEPTED))
    _decide(url, gate.id, Decision(ReviewDecision.CORRECTED, hc_mm=150.0))  # no ellipse to outline: passed over

    out = tmp_path / "labels"
    assert main(["export-labels", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 4 and list(report["skipped"]) == [str(gate.id)]
    names = sorted(p.name for p in (out / "training_set").glob("*HC.png"))
    assert names == sorted([f"0001_{a[0].id}HC.png", f"0001_{a[1].id}HC.png", f"0002_{b[0].id}HC.png",
                            f"0002_{b[2].id}HC.png"])  # patients numbered, never named
    cases = {c.name: c for c in load_cases(out)}  # the HC18 loader reads the export as it is
    assert sorted(cases) == names
    with open(out / "training_set_pixel_size_and_HC.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["filename", "pixel size(mm)", "head circumference (mm)"]
    expected_hc = {a[0].id: a[0].hc_mm - 8.0, a[1].id: a[1].hc_mm, b[0].id: b[0].hc_mm, b[2].id: b[2].hc_mm - 8.0}
    for name, case in cases.items():
        ident = int(name.split("_")[1][:-len("HC.png")])
        assert case.hc_mm == pytest.approx(expected_hc[ident], abs=0.3)
        image = case.load_image()
        assert image.shape == (REGION[3] - REGION[1] + 1, REGION[2] - REGION[0] + 1)  # the region measured
        outline = case.reference_ellipse_px()  # HC18's own check: the outline's perimeter x pixel size = HC
        assert outline.perimeter * case.pixel_size_mm == pytest.approx(case.hc_mm, abs=1.5)
    with open(out / "labels.csv", newline="") as fh:
        manifest = {row["filename"]: row for row in csv.DictReader(fh)}
    assert manifest[f"0001_{a[1].id}HC.png"]["decision"] == "corrected"
    assert {row["reviewer"] for row in manifest.values()} == {"alice"}
    assert main(["export-labels", "--out", str(tmp_path / "none"), "--since", "2999-01-01"]) == 0
    assert "0 reviewed frame(s)" in capsys.readouterr().out

    data, run = tmp_path / "hc18", tmp_path / "run"
    write_hc18_folder(data, tuple((f"{900 + i}_HC.png", 120.0 + 25 * i, i) for i in range(5)))
    assert main(["train", "--data", str(data), "--extra-data", str(out), "--out", str(run), "--epochs", "1",
                 "--input-size", "32", "48", "--batch-size", "2", "--val-fraction", "0.3", "--val-every", "1",
                 "--threads", "1", "--channels", "4", "8", "16", "32", "64"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert split["extra_train"] == {str(out): names}
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["step"] == (len(split["train"]) + len(names)) // 2  # the exported frames were trained on


def test_square_pixels_keep_the_ellipse_in_mm() -> None:
    pixels = (np.arange(60 * 80) % 251).astype(np.uint8).reshape(60, 80)
    e = Ellipse.make(12.0, 9.0, 7.0, 5.0, 0.6)
    same, size, px = square_frame(pixels, 0.2, 0.2, e)
    assert same is pixels and size == 0.2 and px.perimeter * 0.2 == pytest.approx(e.perimeter, rel=1e-9)
    wide, size, px = square_frame(pixels, 0.3, 0.2, e)  # columns 1.5 x as wide: resampled to 0.2 mm
    assert wide.shape == (60, 120) and size == 0.2
    assert px.perimeter * size == pytest.approx(e.perimeter, rel=1e-6)
    assert (px.cx + 0.5) * size == pytest.approx(e.cx + 0.5 * 0.3, abs=1e-9)  # pixel centres as a resize maps them
    assert math.isclose(px.cy * size, e.cy, rel_tol=1e-9)
