"""Issue 19 in the API and the page: /healthz's plane_classifier, ?plane= on the results, counts per plane in
/api/stats, the plane label in a measurement's answer and on the page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from db import session_scope, upgrade, upsert_measurement
from models.plane.classes import PlaneClass
from models.plane.sononet import expected_shapes
from tests.worker.api.test_api import _render, call, call_json, post, running, stored_row
from tests.worker.gate_support import use_gate
from tests.worker.plane_support import ShapeClassifier, abdomen_scan, answer, three_way_gate, use_classifier
from worker.core.settings import get_settings


def test_healthz_says_whether_the_plane_classifier_is_present_off_or_invalid(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with running() as url:
        assert call_json(url + "/healthz")[1]["plane_classifier"] == "off"
    rng = np.random.default_rng(0)
    good = tmp_path / "SonoNet16.npz"
    np.savez(good, *[rng.normal(size=s).astype(np.float32) for s in expected_shapes()])
    fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(good))
    with running() as url:
        status, body = call_json(url + "/healthz")
    assert (status, body["status"], body["plane_classifier"]) == (200, "ok", "present")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(good.read_bytes()[:50_000])
    for bad in (damaged, tmp_path / "absent.npz"):
        fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(bad))
        with running() as url:
            status, body = call_json(url + "/healthz")
        assert (status, body["status"], body["plane_classifier"], body["model_file"]) == (
            503, "unavailable", "invalid", "present")


def test_results_by_plane_and_counts_per_plane(fetalhc_env: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    upgrade(settings.database_url)
    probabilities = answer(PlaneClass.ABDOMINAL, 0.91).as_dict()
    with session_scope(settings.database_url) as s:
        upsert_measurement(s, stored_row(sop_instance_uid="1.9.1", status="not_head", plane_label="abdominal",
                                         plane_probability=0.91, plane_probabilities=probabilities))
        upsert_measurement(s, stored_row(sop_instance_uid="1.9.2", status="measured", hc_mm=170.0,
                                         plane_label="brain_tv", plane_probability=0.99))
        upsert_measurement(s, stored_row(sop_instance_uid="1.9.3", status="measured", hc_mm=171.0))  # no classifier
    with running() as url:
        status, rows = call_json(url + "/api/results?plane=abdominal")
        assert status == 200
        assert [(r["sop_instance_uid"], r["status"], r["plane_probabilities"]) for r in rows] == [
            ("1.9.1", "not_head", probabilities)]
        assert [r["sop_instance_uid"] for r in call_json(url + "/api/results")[1]] == ["1.9.2", "1.9.3"]
        status, error = call_json(url + "/api/results?plane=thorax")
        assert (status, error["reason"]) == (400, "bad_parameter") and "abdominal" in error["message"]
        status, _, data = call(url + "/api/results.csv?plane=abdominal")
        [row] = list(csv.DictReader(io.StringIO(data.decode())))
        assert (row["plane_label"], json.loads(row["plane_probabilities"])) == ("abdominal", probabilities)
        stats = call_json(url + "/api/stats")[1]
    assert list(stats["planes"]) == [c.value for c in PlaneClass]
    assert (stats["planes"]["abdominal"], stats["planes"]["brain_tv"], stats["planes"]["femur"]) == (1, 1, 0)
    assert sum(stats["planes"].values()) == 2  # the row without a label is counted by status only


def test_a_measurement_answer_carries_the_plane_label(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_gate(fetalhc_env, three_way_gate())
    use_classifier(fetalhc_env, ShapeClassifier())
    data = abdomen_scan(tmp_path / "abdomen.dcm").read_bytes()
    with running() as url:
        status, body = post(url + "/api/measure?store=1", data)
    assert (status, body["status"], body["plane_label"], body["plane_probability"]) == (
        200, "not_head", "abdominal", 0.91)
    assert body["plane_probabilities"]["abdominal"] == 0.91 and body["hc_mm"] is None


def test_the_page_shows_the_plane_label(tmp_path: Path) -> None:
    base = {"spacing": {}, "ga": {"days": None}, "scan": {}, "model": {}, "stored": False, "overlay_png": None}
    measured = _render(tmp_path, {**base, "status": "measured", "hc_mm": 181.2, "bpd_mm": 50.0, "ofd_mm": 60.0,
                                  "quality": 0.9, "head_plane_score": 0.97, "flags": [], "plane_label": "brain_tv",
                                  "plane_probability": 0.99})
    assert "Standard planebrain tv (0.99)" in measured["result"]
    uncertain = _render(tmp_path, {**base, "status": "needs_review", "hc_mm": 150.0, "bpd_mm": 45.0, "ofd_mm": 50.0,
                                   "quality": 0.9, "head_plane_score": 0.6, "flags": ["plane_uncertain"],
                                   "plane_label": None, "plane_probability": None})
    assert "plane uncertain" in uncertain["result"] and "Standard plane-" in uncertain["result"]
    set_aside = _render(tmp_path, {**base, "status": "not_head", "reason": "not_head_plane", "hc_mm": None,
                                   "head_plane_score": 0.6, "flags": [], "plane_label": "abdominal",
                                   "plane_probability": 0.91,
                                   "message": "not a head plane: SonoNet-16 says abdominal (0.91)"})
    assert set_aside["status"] == "not a head plane" and "Standard planeabdominal (0.91)" in set_aside["result"]
