"""Issue 19 in the pipeline: the plane decision's three outcomes and the plane label through ``fetalhc process``,
``results --plane`` and the task, with and without the classifier, and what a bad classifier file does.

Most tests use fixed-answer gates and classifiers (``tests.worker.plane_support``); those marked with the real
SonoNet-16 file and its example screens read ``../shared`` and skip cleanly where it is absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db import Job, JobStatus, Measurement, create_job, session_scope, set_job_status, upgrade
from models.errors import WeightsError
from models.plane.sononet import PUBLISHED_SHA256, cached_plane_classifier, expected_shapes
from tests.conftest import require
from tests.worker.gate_support import head_scan, other_scan, use_gate
from tests.worker.plane_support import (
    EXAMPLES,
    SONONET,
    ShapeClassifier,
    abdomen_scan,
    example_scan,
    three_way_gate,
    use_classifier,
)
from worker.cli import main
from worker.core.settings import Settings, get_settings
from worker.measure.pipeline import load_context

PROBABILITY_KEYS = ["3vv", "4ch", "abdominal", "background", "brain_cb", "brain_tv", "femur", "kidneys", "lips",
                    "lvot", "profile", "rvot", "spine_coronal", "spine_sagittal"]


@pytest.fixture()
def env(fetalhc_env: pytest.MonkeyPatch) -> Settings:
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    return settings


def _scans(folder: Path) -> Path:
    head_scan(folder / "a_head.dcm")
    abdomen_scan(folder / "b_abdomen.dcm")
    other_scan(folder / "c_other.dcm")
    return folder


def _process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, dict]]:
    code = main(["process", "--json", *argv])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, {Path(r["path"]).name: r for r in printed}


def _stored() -> dict[str, Measurement]:
    with session_scope(get_settings().database_url) as s:
        return {Path(m.path).name: m for m in s.scalars(select(Measurement))}


def _results(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main(["results", "--json", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


# -- the three outcomes, injected gate and classifier --------------------------------------------------------------

def test_without_the_classifier_the_gate_alone_measures_reviews_or_sets_aside_and_labels_nothing(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    use_gate(monkeypatch, three_way_gate())
    use_classifier(monkeypatch, None)
    code, rows = _process(capsys, str(_scans(tmp_path / "scans")))

    assert code == 0
    assert rows["a_head.dcm"]["status"] in ("measured", "needs_review")
    assert "plane_uncertain" not in (rows["a_head.dcm"]["flags"] or "")
    abdomen = rows["b_abdomen.dcm"]  # 0.60: in the gate's review band, where real non-head planes scored
    assert (abdomen["status"], abdomen["reason"]) == ("needs_review", "plane_uncertain")
    assert "plane_uncertain" in abdomen["flags"] and abdomen["hc_mm"] == pytest.approx(150, rel=0.1)
    assert "plane uncertain: head-plane score 0.600 between 0.412 and 0.800" in abdomen["detail"]
    assert rows["c_other.dcm"]["status"] == "not_head"
    stored = _stored()
    assert all((m.plane_label, m.plane_probability, m.plane_probabilities) == (None, None, None)
               for m in stored.values())  # never guessed
    assert [r["patient_id"] for r in _results(capsys, "--status", "needs_review")] == ["P-ABDOMEN"]
    with session_scope(env.database_url) as s:
        jobs = {Path(j.path).name: (j.status, j.reason) for j in s.scalars(select(Job))}
    assert jobs["b_abdomen.dcm"] == ("needs_review", "plane_uncertain")


def test_with_the_classifier_every_row_gets_a_plane_label_and_the_abdomen_is_set_aside(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    use_gate(monkeypatch, three_way_gate())
    classifier = ShapeClassifier()
    use_classifier(monkeypatch, classifier)
    code, rows = _process(capsys, str(_scans(tmp_path / "scans")))

    assert code == 0 and classifier.seen == 3
    assert rows["a_head.dcm"]["status"] in ("measured", "needs_review")
    assert (rows["a_head.dcm"]["plane_label"], rows["a_head.dcm"]["plane_probability"]) == ("brain_tv", 0.97)
    abdomen = rows["b_abdomen.dcm"]
    assert (abdomen["status"], abdomen["hc_mm"], abdomen["plane_label"]) == ("not_head", None, "abdominal")
    assert abdomen["detail"] == "not a head plane: SonoNet-16 says abdominal (0.91), head-plane score 0.600"
    assert (rows["c_other.dcm"]["status"], rows["c_other.dcm"]["plane_label"]) == ("not_head", "femur")
    stored = _stored()
    assert list(stored["b_abdomen.dcm"].plane_probabilities) == PROBABILITY_KEYS
    assert stored["b_abdomen.dcm"].plane_probabilities["abdominal"] == 0.91
    assert sum(stored["c_other.dcm"].plane_probabilities.values()) == pytest.approx(1, abs=1e-3)

    # the results as an index of the archive's planes: a plane's rows in every status, not_head included
    assert [(r["patient_id"], r["status"]) for r in _results(capsys, "--plane", "abdominal")] == [
        ("P-ABDOMEN", "not_head")]
    assert [r["patient_id"] for r in _results(capsys, "--plane", "brain_tv")] == ["P-HEAD"]
    assert _results(capsys, "--plane", "lips") == []
    assert [r["patient_id"] for r in _results(capsys)] == ["P-HEAD"]  # not_head rows still left out without --plane
    assert main(["results", "--csv", "--plane", "femur"]) == 0
    csv_text = capsys.readouterr().out
    assert '"{""3vv"":' in csv_text  # the 14 probabilities as one JSON cell
    with pytest.raises(SystemExit):
        main(["results", "--plane", "thorax"])  # not one of SonoNet-16's classes


def test_a_plane_uncertain_head_is_reviewed_with_the_classifier_too(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier says background on a round section of 150 mm the gate passes: they disagree."""
    use_gate(monkeypatch, three_way_gate())
    use_classifier(monkeypatch, ShapeClassifier(answers={}))  # background (0.8) for everything
    code, rows = _process(capsys, str(abdomen_scan(tmp_path / "b_abdomen.dcm")))
    row = rows["b_abdomen.dcm"]
    assert (code, row["status"], row["reason"], row["plane_label"]) == (0, "needs_review", "plane_uncertain",
                                                                        "background")
    assert "plane uncertain: SonoNet-16 says background (0.80), head-plane score 0.600: they disagree" in row["detail"]


def test_the_task_stores_the_label_on_a_not_head_row(env: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.queue.tasks import measure

    use_gate(monkeypatch, three_way_gate())
    use_classifier(monkeypatch, ShapeClassifier())
    path = abdomen_scan(tmp_path / "abdomen.dcm")
    with session_scope(env.database_url) as s:
        job_id = create_job(s, str(path.resolve()), "test", "live")
        set_job_status(s, job_id, JobStatus.QUEUED)
    assert measure.run(job_id, str(path)) == {"job_id": job_id, "status": "not_head", "reason": "not_head_plane",
                                             "hc_mm": None}
    row = _stored()["abdomen.dcm"]
    assert (row.status, row.plane_label, row.plane_probability) == ("not_head", "abdominal", 0.91)


# -- a missing, wrong or damaged classifier file -------------------------------------------------------------------

def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = expected_shapes()
    shapes[7] = (32, 16, 3, 3)
    np.savez(folder / "wrong.npz", *[rng.normal(size=s).astype(np.float32) for s in shapes])
    good = folder / "good.npz"
    np.savez(good, *[rng.normal(size=s).astype(np.float32) for s in expected_shapes()])
    (folder / "cut.npz").write_bytes(good.read_bytes()[:100_000])
    (folder / "page.npz").write_text("<html>Not Found</html>")
    return {"missing": (folder / "nothing.npz", "does not exist"),
            "wrong": (folder / "wrong.npz", r"arr_7 has shape \(32, 16, 3, 3\), SonoNet-16 needs \(16,\)"),
            "cut": (folder / "cut.npz", "not a readable .npz file"),
            "page": (folder / "page.npz", "not a readable .npz file")}


def test_a_bad_classifier_file_stops_process_and_the_worker_before_anything_is_stored(
        env: Settings, fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.queue.tasks import measure

    scan = head_scan(tmp_path / "head.dcm")
    with session_scope(env.database_url) as s:
        job_id = create_job(s, str(scan.resolve()), "test", "live")
        set_job_status(s, job_id, JobStatus.QUEUED)
    for name, (path, message) in _bad_files(tmp_path / "files").items():
        fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(path))
        get_settings.cache_clear()
        cached_plane_classifier.cache_clear()
        with pytest.raises(WeightsError, match=message):
            load_context(get_settings())
        code = main(["process", str(scan)])
        err = capsys.readouterr().err
        assert code != 0 and "plane classifier" in err and str(path) in err, (name, err)
        with pytest.raises(WeightsError, match="plane classifier"):  # the worker's task: nothing claimed
            measure.run(job_id, str(scan))
    assert _stored() == {}
    with session_scope(env.database_url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts) == ("queued", 0)


def test_another_well_formed_file_is_used_with_a_warning(
        env: Settings, fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(tmp_path / "files" / "good.npz"))
    _bad_files(tmp_path / "files")
    fetalhc_env.setenv("FETALHC_BACKEND", "torch")
    get_settings.cache_clear()
    cached_plane_classifier.cache_clear()
    with caplog.at_level(logging.WARNING, logger="models.plane.sononet"):
        ctx = load_context(get_settings())
    assert ctx.classifier is not None and ctx.classifier.sha256 != PUBLISHED_SHA256
    assert "not the published SonoNet16.npz" in caplog.text
    cached_plane_classifier.cache_clear()


def test_the_classifier_runs_in_its_own_precision_f32_unless_told(
        env: Settings, fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FETALHC_PLANE_CLASSIFIER_PRECISION, not FETALHC_PRECISION: bf16 segmentation keeps a float32 classifier."""
    fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(tmp_path / "files" / "good.npz"))
    _bad_files(tmp_path / "files")
    fetalhc_env.setenv("FETALHC_BACKEND", "torch")
    fetalhc_env.setenv("FETALHC_PRECISION", "bf16")
    for wanted, got in ((None, "f32"), ("bf16", "bf16"), ("f32", "f32")):
        if wanted is None:
            fetalhc_env.delenv("FETALHC_PLANE_CLASSIFIER_PRECISION", raising=False)
        else:
            fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER_PRECISION", wanted)
        get_settings.cache_clear()
        cached_plane_classifier.cache_clear()
        ctx = load_context(get_settings())
        assert ctx.net.precision.value == "bf16"
        assert ctx.classifier is not None and ctx.classifier.precision.value == got, wanted
        assert ctx.classifier.forward.precision.value == got
    cached_plane_classifier.cache_clear()


# -- the real SonoNet-16 and the shipped gate (../shared) ----------------------------------------------------------

def test_real_screens_through_process_with_and_without_sononet(
        env: Settings, fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require(SONONET.is_file() and EXAMPLES.is_dir(), f"SonoNet-16 and its example screens in {SONONET.parents[1]}")
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("BRAIN-TV", "BRAIN-CB", "ABDOMINAL", "RVOT", "SPINE-SAGITTAL"):
        example_scan(name, folder)
    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "on")

    get_settings.cache_clear()
    code, alone = _process(capsys, str(folder))
    assert code == 0
    assert alone["BRAIN-TV.dcm"]["status"] == "measured"
    assert alone["BRAIN-CB.dcm"]["status"] != "not_head"  # a brain plane is never refused
    assert (alone["ABDOMINAL.dcm"]["status"], alone["ABDOMINAL.dcm"]["reason"]) == ("needs_review", "plane_uncertain")
    assert alone["RVOT.dcm"]["status"] != "measured"
    assert alone["SPINE-SAGITTAL.dcm"]["status"] == "not_head"
    assert all(r["plane_label"] is None for r in alone.values())

    fetalhc_env.setenv("FETALHC_PLANE_CLASSIFIER", str(SONONET))
    get_settings.cache_clear()
    code, both = _process(capsys, str(folder))
    assert code == 0
    assert {n: (r["status"], r["plane_label"]) for n, r in both.items()} == {
        "BRAIN-TV.dcm": ("measured", "brain_tv"), "BRAIN-CB.dcm": ("measured", "brain_cb"),
        "ABDOMINAL.dcm": ("not_head", "abdominal"), "RVOT.dcm": ("not_head", "rvot"),
        "SPINE-SAGITTAL.dcm": ("not_head", "spine_sagittal")}
    assert both["BRAIN-TV.dcm"]["hc_mm"] == alone["BRAIN-TV.dcm"]["hc_mm"]  # the decision never moves an HC
    assert [r["patient_id"] for r in _results(capsys, "--plane", "abdominal")] == ["P-ABDOMINAL"]
