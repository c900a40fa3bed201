"""Issue 11 outside the gate: settings, the pipeline's not_head outcome, process, results, tasks, metrics, SR.

The gate here is a test gate with fixed probabilities (``tests.worker.gate_support``); the shipped
gate is exercised end to end in ``test_head_plane_shipped.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from db import Job, JobStatus, Measurement, create_job, session_scope, set_job_status, upgrade
from db.tables import FINISHED_JOB_STATUSES, UNFINISHED_JOB_STATUSES, MeasurementStatus
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.errors import WeightsError
from tests.worker.gate_support import OTHER_SCORE, SequenceGate, ShapeGate, head_scan, other_scan, use_gate
from worker.cli import main
from worker.measure.gate import ThresholdOverride, gate_for
from worker.measure.pipeline import PipelineContext, WorkItem, load_context, measure_rows, store_rows
from worker.core.settings import Settings, get_settings


def _context(gate: object) -> PipelineContext:
    ctx = load_context(get_settings())
    return PipelineContext(ctx.settings, ctx.model, ctx.device, gate)  # type: ignore[arg-type]


@pytest.fixture()
def env(fetalhc_env: pytest.MonkeyPatch) -> Settings:
    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "off")  # load_context's own gate is replaced by each test
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    return settings


# -- settings ------------------------------------------------------------------------------------------------------

def test_gate_settings_default_on_and_refuse_nonsense(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FETALHC_HEAD_PLANE_GATE", raising=False)
    monkeypatch.delenv("FETALHC_HEAD_PLANE_THRESHOLD", raising=False)
    assert (Settings().head_plane_gate, Settings().head_plane_threshold) == ("on", None)
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", "OFF")
    assert Settings().head_plane_gate == "off"
    gate_file = tmp_path / "gate.pt"
    gate_file.write_bytes(b"x")
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", str(gate_file))
    assert Settings().head_plane_gate == str(gate_file)
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="choose one of: on, off, or the path of a gate file"):
        Settings()
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", "on")
    monkeypatch.setenv("FETALHC_HEAD_PLANE_THRESHOLD", "0.25")
    assert Settings().head_plane_threshold == 0.25
    for bad in ("1.5", "-0.1", "half"):
        monkeypatch.setenv("FETALHC_HEAD_PLANE_THRESHOLD", bad)
        with pytest.raises(ValueError, match="FETALHC_HEAD_PLANE_THRESHOLD"):
            Settings()


def test_gate_for_follows_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import worker.measure.gate

    loaded: list[tuple[str | None, str, str]] = []
    inner = ShapeGate()
    monkeypatch.setattr(worker.measure.gate, "load_gate",
                        lambda path, device, backend: loaded.append((path, device, backend)) or inner)
    monkeypatch.setenv("FETALHC_BACKEND", "torch")
    gate_file = tmp_path / "gate.pt"
    gate_file.write_bytes(b"x")
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", "off")
    assert gate_for(Settings()) is None and loaded == []
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", "on")
    assert gate_for(Settings(), "cpu") is inner and loaded == [(None, "cpu", "torch")]
    monkeypatch.setenv("FETALHC_HEAD_PLANE_GATE", str(gate_file))
    monkeypatch.setenv("FETALHC_HEAD_PLANE_THRESHOLD", "0.02")
    gate = gate_for(Settings(), "cpu")
    assert loaded[-1] == (str(gate_file), "cpu", "torch")
    monkeypatch.setenv("FETALHC_BACKEND", "openvino")  # the gate's CNN runs through the settings' backend
    gate_for(Settings(), "cpu")
    assert loaded[-1] == (str(gate_file), "cpu", "openvino")
    assert isinstance(gate, ThresholdOverride) and gate.threshold == 0.02
    verdict = gate.verdicts([np.zeros((210, 310))], [None])[0]  # 0.031 against 0.02 instead of 0.412
    assert (verdict.probability, verdict.threshold, verdict.is_head) == (OTHER_SCORE, 0.02, True)


def test_a_missing_gate_file_stops_the_context_with_a_clear_error(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import models.plane.head_plane

    fetalhc_env.setenv("FETALHC_HEAD_PLANE_GATE", "on")
    fetalhc_env.setattr(models.plane.head_plane, "SHIPPED_GATE", tmp_path / "no_gate.pt")
    models.plane.head_plane.load_gate.cache_clear()
    get_settings.cache_clear()
    try:
        with pytest.raises(WeightsError, match="FETALHC_HEAD_PLANE_GATE=off"):
            load_context(get_settings())
    finally:
        models.plane.head_plane.load_gate.cache_clear()


# -- the pipeline --------------------------------------------------------------------------------------------------

def test_a_refused_image_is_set_aside_as_not_head_without_hc_or_growth_facts(env: Settings, tmp_path: Path) -> None:
    gate = ShapeGate()
    ctx = _context(gate)
    with session_scope(env.database_url) as s:
        job_ids = [create_job(s, str(tmp_path / n), "test") for n in ("head.dcm", "other.dcm")]
    items = [WorkItem(head_scan(tmp_path / "head.dcm"), job_ids[0]), WorkItem(other_scan(tmp_path / "other.dcm"),
                                                                              job_ids[1])]

    head, other = measure_rows(ctx, items)
    store_rows(env.database_url, items, [head, other])

    assert sorted(gate.seen) == [((200, 300), True), ((210, 310), True)]  # both segmented, then judged
    assert head["status"] in ("measured", "needs_review") and head["head_plane_score"] == 0.93
    assert head["hc_mm"] == pytest.approx(110.0, rel=0.08) and head["ga_days"] == 151.0
    assert (other["status"], other["reason"]) == ("not_head", "not_head_plane")
    assert other["detail"] == "not a head plane: head-plane score 0.031 < 0.412"
    assert other["head_plane_score"] == OTHER_SCORE
    for column in ("hc_mm", "bpd_mm", "ofd_mm", "quality", "ga_days", "ga_estimate_days", "hc_centile",
                   "hc_z_score", "center_x_mm", "flags"):
        assert other.get(column) is None, column
    assert other["sop_instance_uid"] and other["spacing_mm_x"] == 0.2  # identity and calibration kept
    with session_scope(env.database_url) as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        assert [jobs[j].status for j in job_ids] == [head["status"].replace("measured", "done"), "not_head"]
        assert jobs[job_ids[1]].reason == "not_head_plane" and jobs[job_ids[1]].finished_at is not None
        assert jobs[job_ids[1]].detail == other["detail"]
        stored = s.scalars(select(Measurement).where(Measurement.status == "not_head")).one()
        assert (stored.hc_mm, stored.ga_estimate_days, stored.head_plane_score) == (None, None, OTHER_SCORE)


def _cine(tmp_path: Path, hcs: list[float]) -> Path:
    frames = np.stack([make_phantom(shape=(270, 400), hc_mm=hc, spacing_mm=0.3, seed=i).image
                       for i, hc in enumerate(hcs)])
    return write_us_image(tmp_path / "cine.dcm", frames, 0.3)


CINE_HC = [150.0, 170.0, 190.0, 210.0, 230.0]


def test_in_a_cine_the_best_head_frame_wins_and_refused_frames_never_do(
        env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALHC_MAX_FRAMES", "0")
    get_settings.cache_clear()
    ctx = _context(SequenceGate([0.1, 0.95, 0.2, 0.3, 0.9]))  # frames 2 and 5 are heads

    row = measure_rows(ctx, [WorkItem(_cine(tmp_path, CINE_HC))])[0]

    assert row["status"] in ("measured", "needs_review")
    assert row["frame"] in (2, 5)
    assert row["hc_mm"] == pytest.approx(CINE_HC[row["frame"] - 1], rel=0.08)
    assert row["head_plane_score"] == (0.95 if row["frame"] == 2 else 0.9)


def test_a_cine_with_no_head_frame_is_not_head_with_its_best_score(
        env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALHC_MAX_FRAMES", "0")
    get_settings.cache_clear()
    ctx = _context(SequenceGate([0.2, 0.45, 0.1, 0.3, 0.05]))

    row = measure_rows(ctx, [WorkItem(_cine(tmp_path, CINE_HC))])[0]

    assert (row["status"], row["reason"], row["frame"]) == ("not_head", "not_head_plane", 2)
    assert row["detail"] == "not a head plane: head-plane score 0.450 < 0.500 (best of 5 frames)"
    assert row["head_plane_score"] == 0.45 and row.get("hc_mm") is None


def test_a_blank_frame_is_still_failed_not_set_aside(env: Settings, tmp_path: Path) -> None:
    gate = ShapeGate(default=0.01)
    path = write_us_image(tmp_path / "blank.dcm", np.zeros((200, 300), np.uint8), 0.2)
    row = measure_rows(_context(gate), [WorkItem(path)])[0]
    assert (row["status"], row["reason"]) == ("failed", "blank_image") and gate.seen == []


def test_with_the_gate_off_every_head_is_measured_and_scored_none(env: Settings, tmp_path: Path) -> None:
    row = measure_rows(load_context(env), [WorkItem(other_scan(tmp_path / "other.dcm"))])[0]
    assert row["status"] in ("measured", "needs_review") and row["head_plane_score"] is None


# -- process, results -----------------------------------------------------------------------------------------------

def test_process_reports_not_head_and_results_leave_it_out_unless_asked(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    use_gate(fetalhc_env, ShapeGate())
    head_scan(tmp_path / "scans" / "a_head.dcm")
    other_scan(tmp_path / "scans" / "b_other.dcm")

    code = main(["process", "--json", str(tmp_path / "scans")])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]

    assert code == 0  # set aside is not a failure
    by_name = {Path(r["path"]).name: r for r in printed}
    assert by_name["b_other.dcm"]["status"] == "not_head"
    assert by_name["b_other.dcm"]["head_plane_score"] == OTHER_SCORE and by_name["b_other.dcm"]["hc_mm"] is None
    assert by_name["a_head.dcm"]["head_plane_score"] == 0.93

    assert main(["process", str(tmp_path / "scans" / "b_other.dcm")]) == 0
    assert "not_head HC - (not_head_plane: not a head plane: head-plane score 0.031 < 0.412)" in \
        capsys.readouterr().out

    def results(*argv: str) -> list[dict]:
        assert main(["results", "--json", *argv]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]

    assert [r["patient_id"] for r in results()] == ["P-HEAD"]
    assert [(r["patient_id"], r["status"]) for r in results("--status", "not_head")] == [("P-OTHER", "not_head")]
    assert main(["results"]) == 0
    table = capsys.readouterr().out
    assert "P-HEAD" in table and "P-OTHER" not in table and table.rstrip().endswith("1 rows")


# -- tasks, metrics, SR, retention ----------------------------------------------------------------------------------

def test_the_task_finishes_a_non_head_as_not_head_and_counts_it(
        env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from worker.queue.tasks import measure, measure_batch

    use_gate(monkeypatch, ShapeGate())

    def counted() -> float:
        return REGISTRY.get_sample_value("fetalhc_scans_total", {"status": "not_head",
                                                                 "reason": "not_head_plane"}) or 0.0

    def job(path: Path) -> int:
        with session_scope(env.database_url) as s:
            job_id = create_job(s, str(path.resolve()), "test", "live")
            set_job_status(s, job_id, JobStatus.QUEUED)
        return job_id

    before = counted()
    other = job(other_scan(tmp_path / "other.dcm"))
    summary = measure.run(other, str(tmp_path / "other.dcm"))
    again = measure.run(other, str(tmp_path / "other.dcm"))  # finished: skipped, not measured again
    batch = measure_batch.run([[job(head_scan(tmp_path / "head.dcm")), str(tmp_path / "head.dcm"), None],
                               [job(other_scan(tmp_path / "other2.dcm", seed=1)), str(tmp_path / "other2.dcm"),
                                None]])

    assert summary == {"job_id": other, "status": "not_head", "reason": "not_head_plane", "hc_mm": None}
    assert again == {"job_id": other, "status": "not_head", "duplicate": True}
    assert [r["status"] for r in batch["results"]][1] == "not_head"
    assert batch["results"][0]["status"] in ("measured", "needs_review")
    assert counted() == before + 2
    with session_scope(env.database_url) as s:
        assert s.get(Job, other).attempts == 1


def test_fetalhc_jobs_counts_not_head(env: Settings) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from worker.ops.metrics_server import WorkerCollector

    with session_scope(env.database_url) as s:
        for _ in range(2):
            set_job_status(s, create_job(s, "/x.dcm", "test", "live"), JobStatus.NOT_HEAD, reason="not_head_plane")
    registry = CollectorRegistry()
    registry.register(WorkerCollector(env))
    samples = {(x.name, tuple(x.labels.items())): x.value for f in text_string_to_metric_families(
        generate_latest(registry).decode()) for x in f.samples}
    assert samples[("fetalhc_jobs", (("status", "not_head"),))] == 2


def test_no_sr_is_written_for_a_not_head_row(env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.measure.sr_export import export_reports

    monkeypatch.setenv("FETALHC_SR_DIR", str(tmp_path / "sr"))
    get_settings.cache_clear()
    settings = get_settings()
    ctx = _context(ShapeGate())
    items = [WorkItem(head_scan(tmp_path / "head.dcm")), WorkItem(other_scan(tmp_path / "other.dcm"))]
    rows = measure_rows(ctx, items)
    store_rows(settings.database_url, items, rows)

    export_reports(settings, rows[1:])
    assert not list((tmp_path / "sr").glob("*.dcm"))  # not_head: nothing
    export_reports(settings, rows[:1])
    assert len(list((tmp_path / "sr").glob("*.dcm"))) == 1  # the head: its report


def test_every_list_of_finished_job_statuses_includes_not_head() -> None:
    import worker.ops.spool_retention
    import worker.queue.tasks

    finished = {s.value for s in FINISHED_JOB_STATUSES}
    assert "not_head" in finished and not finished & {s.value for s in UNFINISHED_JOB_STATUSES}
    # One definition (db.tables), used by the task and by spool retention, not copies of it.
    assert worker.queue.tasks.FINISHED_JOB_STATUSES is FINISHED_JOB_STATUSES
    assert worker.ops.spool_retention.FINISHED_JOB_STATUSES is FINISHED_JOB_STATUSES
    assert {s.value for s in worker.queue.tasks.JOB_STATUS_OF} == {s.value for s in MeasurementStatus}


def test_spool_retention_prunes_a_long_finished_not_head_scan(env: Settings) -> None:
    from worker.ops.spool_retention import prune_spool

    spool = env.spool_dir
    path = head_scan(spool / "live" / "old.dcm")
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    with session_scope(env.database_url) as s:
        job_id = create_job(s, str(path), "live", "live")
        set_job_status(s, job_id, JobStatus.NOT_HEAD, reason="not_head_plane", detail="not a head plane")
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=old, updated_at=old))
    import os

    os.utime(path, (old.timestamp(), old.timestamp()))

    summary = prune_spool(env, dt.timedelta(days=30))

    assert summary.files == 1 and not path.exists()
    with session_scope(env.database_url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.reason) == ("not_head", "not_head_plane") and "spool file pruned" in job.detail


def test_backfill_counts_a_not_head_row_as_done_for_its_model(env: Settings) -> None:
    from db import measured_uids, upsert_measurement

    with session_scope(env.database_url) as s:
        for uid, status in (("1.1", "not_head"), ("1.2", "failed"), ("1.3", "measured")):
            upsert_measurement(s, {"sop_instance_uid": uid, "frame": 1, "model_version": "v1", "status": status})
        assert measured_uids(s, "v1", ["1.1", "1.2", "1.3"]) == {"1.1", "1.3"}  # a failure is tried again
        assert measured_uids(s, "v2", ["1.1"]) == set()


def test_bench_times_the_gate_apart(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.tools.bench import run_bench

    use_gate(monkeypatch, ShapeGate())
    result = run_bench(env, n=2, threads=1)
    assert result["head_plane_gate"].startswith("on")
    assert isinstance(result["gate_s_median"], float) and result["gate_s_median"] >= 0
