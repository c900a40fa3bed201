"""The measurement pipeline: DICOM file -> Scan -> segmentation -> ellipse -> HC -> growth -> row.

Joins the three rooms: ``dicom_io`` reads, ``models`` measures, ``db`` stores. Several files are
measured together so a GPU sees several scans per forward pass; each file's failure stays its own.
With the head-plane gate on (``FETALHC_HEAD_PLANE_GATE``), an instance none of whose frames is a head
biometry plane is set aside as ``not_head`` (no HC, no growth facts), distinct from a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from db import JOB_STATUS_OF, MeasurementStatus, session_scope
from db.repository import finish_jobs, upsert_measurements
from db.rows import MeasurementRow
from dicom_io import DicomError, Scan
from dicom_io.bounds import scan_budget
from dicom_io.frames import FramePlan
from dicom_io.encoded import open_encoded_scans
from dicom_io.reader import parse_date, read_dataset
from dicom_io.text import TEXT_CLEANED_FLAG, clean_text
from models.errors import FetalHCError, MeasurementError, NotHeadPlane
from models.geometry.biometry import Biometry
from models.plane.gating import PLANE_UNCERTAIN, PlaneJudgement, finish_judged
from models.plane.sononet import PlaneClassifier
from models.plane.head_plane import HeadPlaneGate
from models.segmentation.backends import Backend, ForwardPass, cached_forward
from models.segmentation.network import pick_device
from models.segmentation.segment import SegmentedBatch, segment_batch
from models.segmentation.weights import LoadedModel, cached_model
from worker.core.settings import Settings
from worker.measure.dating import ga_for_centile, growth_facts
from worker.measure.device_batch import decode_on_host, measure_batch, uses_device_path
from worker.measure.gate import classifier_for, gate_for, refusal_detail
from worker.measure.reports import (
    ReportOutcome,
    apply_report_facts,
    record_report,
    sr_header,
)
from worker.measure.sr_export import export_and_record, mark_owed

log = logging.getLogger(__name__)

# One helper thread per process runs forward passes, so the next batch's network overlaps this batch's contouring.
_FORWARD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetalhc-forward")


@dataclass(frozen=True)
class PipelineContext:
    """What measuring needs: settings, the loaded model, its device, the head-plane gate (None: off) and
    the network's forward pass through ``FETALHC_BACKEND`` (None: the torch network itself)."""

    settings: Settings
    model: LoadedModel
    device: torch.device
    gate: HeadPlaneGate | None = None
    forward: ForwardPass | None = None
    classifier: PlaneClassifier | None = None  # SonoNet-16 (FETALHC_PLANE_CLASSIFIER); None: off

    @property
    def net(self) -> torch.nn.Module | ForwardPass:
        """What ``measure_images`` runs: the backend's forward pass, or the torch network."""
        return self.forward if self.forward is not None else self.model.net


def load_context(settings: Settings) -> PipelineContext:
    """Load (once per process) the model, its forward pass through ``FETALHC_BACKEND`` and the head-plane
    gate named by the settings on the chosen device.

    Called in the process that measures (a worker's pool process after the fork, once torch's threads
    are set): an exported backend takes its thread count from ``torch.get_num_threads()`` then.

    Raises:
        WeightsError: the model or the gate (unless ``FETALHC_HEAD_PLANE_GATE=off``) cannot be loaded.
        BackendUnavailable: ``FETALHC_BACKEND`` names a backend that cannot run here.
    """
    device = pick_device(settings.device)
    model = cached_model(settings.weights, str(device))
    forward = cached_forward(settings.weights, str(device), settings.backend.value, precision=settings.precision.value)
    return PipelineContext(settings, model, device, gate_for(settings, str(device)), forward,
                           classifier_for(settings, str(device)))


@dataclass
class WorkItem:
    """One file to measure, the job it belongs to and a GA supplied with it (days)."""

    path: Path
    job_id: int | None = None
    ga_days_given: float | None = None
    best: tuple[Scan, Biometry] | None = None
    refused: tuple[Scan, NotHeadPlane] | None = None  # the frame the gate scored highest, when it refused all
    refused_frames: int = 0
    planes: dict[tuple[int, Any], PlaneJudgement] = field(default_factory=dict)  # plane evidence by _scan_key
    first_scan: Scan | None = None
    frames: FramePlan | None = None  # the frames read, and why (e.g. a sampled cine)
    report: ReportOutcome | None = None  # an SR (an OB-GYN report): recorded, not measured (no row)
    error: FetalHCError | None = None
    read_ms: float = 0.0
    infer_ms: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def _scans(items: Sequence[WorkItem], max_frames: int = 0) -> Iterator[tuple[WorkItem, Scan]]:
    """Every frame to measure of every item, read lazily; read errors are kept on the item.

    ``max_frames``: a cine without a representative frame is sampled down to this many frames (0: all).
    """
    for item in items:
        t0 = time.perf_counter()
        try:
            item.frames, scans = open_encoded_scans(item.path, max_frames=max_frames)  # plain JPEG left encoded
            if item.frames.sampled:
                log.info("cine sampled: %d of %d frames", len(item.frames.frames), item.frames.total)
            for scan in scans:
                item.read_ms += (time.perf_counter() - t0) * 1000
                item.first_scan = item.first_scan or scan
                yield item, scan
                t0 = time.perf_counter()
        except FetalHCError as exc:
            item.error = exc
        except Exception as exc:  # noqa: BLE001 - any reader crash becomes a recorded failure
            log.exception("unexpected error reading a scan")
            item.error = DicomError(f"unexpected error reading the file: {type(exc).__name__}: {exc}",
                                    reason="read_error")


def _measure(ctx: PipelineContext, items: Sequence[WorkItem]) -> None:
    """Segment all frames in batches of ``settings.batch_size``; keep each item's best frame.

    Batches overlap: while one batch's heads are outlined, fitted and gated here, the next batch's
    forward pass runs in a helper thread (the network's libraries work outside Python's lock), and
    the scans after it are read. A single batch runs as it would without the thread. The torch network
    on CPU does not overlap (``_overlaps``).

    On CUDA a batch is decoded, measured and judged on the device at once (``device_batch.measure_batch``, issue
    23); elsewhere its plain JPEG frames are decoded on CPU threads as it is formed (``device_batch.decode_on_host``).
    """
    pending: tuple[list[tuple[WorkItem, Scan]], Future[Any], float] | None = None

    overlap = _overlaps(ctx)
    on_device = uses_device_path(ctx)

    def start(batch: list[tuple[WorkItem, Scan]]) -> tuple[list[tuple[WorkItem, Scan]], Future[Any], float]:
        work: Any = measure_batch if on_device else segment_batch
        args = (ctx, [s for _, s in batch]) if on_device else (
            ctx.net, [s.pixels for _, s in batch], [s.spacing_mm for _, s in batch], ctx.model.input_size, ctx.device)
        t0 = time.perf_counter()
        if overlap:
            return batch, _FORWARD.submit(work, *args), t0
        done: Future[Any] = Future()
        try:
            done.set_result(work(*args))
        except Exception as exc:  # noqa: BLE001 - raised where the overlapping path would raise it
            done.set_exception(exc)
        return batch, done, t0

    def finish(batch: list[tuple[WorkItem, Scan]], future: Future[Any], t0: float) -> None:
        if on_device:  # measured and judged already; the scans now hold their pixels on the device
            scans, results, judgements = future.result()
            batch = [(item, scan) for (item, _), scan in zip(batch, scans)]
        else:
            results, judgements = finish_judged(future.result(), ctx.gate, ctx.classifier)
        share = (time.perf_counter() - t0) * 1000 / len(batch)
        for (item, scan), result, judgement in zip(batch, results, judgements):
            item.infer_ms += share
            if judgement is not None:
                item.planes[_scan_key(scan)] = judgement
            if isinstance(result, Biometry):
                if item.best is None or _rank(result) > _rank(item.best[1]):
                    item.best = (scan, result)
            elif isinstance(result, NotHeadPlane):
                item.refused_frames += 1
                if item.refused is None or result.score > item.refused[1].score:
                    item.refused = (scan, result)
            elif item.best is None and item.error is None:
                item.error = result if isinstance(result, FetalHCError) else MeasurementError(
                    f"measurement failed: {type(result).__name__}: {result}", reason="measurement_error")

    try:
        for batch in _batches(_scans(items, ctx.settings.max_frames), ctx.settings.batch_size):
            if not on_device:
                batch = _decoded(batch)
                if not batch:
                    continue
            started = start(batch)
            if pending is not None:
                finish(*pending)
            pending = started
        if pending is not None:
            finish(*pending)
            pending = None
    finally:
        if pending is not None:  # an error while finishing the one before: let the forward pass end first
            pending[1].cancel() or pending[1].exception()
    for item in items:  # a frame that measured wins over an earlier frame's failure or refusal
        if item.best is not None:
            item.error = None
            item.refused = None


def _rank(bio: Biometry) -> tuple[bool, float]:
    """How a cine's frames compete to be its best: a head plane before an uncertain one, then by quality."""
    return PLANE_UNCERTAIN not in bio.flags, bio.quality


def _decoded(batch: list[tuple[WorkItem, Scan]]) -> list[tuple[WorkItem, Scan]]:
    """The batch with its JPEG frames decoded on CPU threads; a frame that cannot be is its item's error."""
    out = []
    for (item, _), scan in zip(batch, decode_on_host([s for _, s in batch])):
        if isinstance(scan, Exception):
            item.error = item.error or scan  # type: ignore[assignment]
        else:
            out.append((item, scan))
    return out


def _batches(pairs: Iterator[tuple[WorkItem, Scan]], size: int) -> Iterator[list[tuple[WorkItem, Scan]]]:
    """The frames in lists of ``size`` (the last one shorter), read as they are asked for."""
    batch: list[tuple[WorkItem, Scan]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _overlaps(ctx: PipelineContext) -> bool:
    """Whether forward passes run in the helper thread: not for the torch network on CPU, whose OpenMP threads
    in a second thread would contend with the first thread's own (twice as slow on 2 cores)."""
    return not (ctx.device.type == "cpu" and getattr(ctx.net, "backend", Backend.TORCH) is Backend.TORCH)


def _row(ctx: PipelineContext, item: WorkItem) -> MeasurementRow:
    scan = item.best[0] if item.best else (item.refused[0] if item.refused else item.first_scan)
    row: dict[str, Any] = {
        "path": str(item.path), "job_id": item.job_id, "model_name": ctx.model.model_name,
        "model_version": ctx.model.model_version, "read_ms": round(item.read_ms, 1),
        "infer_ms": round(item.infer_ms, 1), "total_ms": round((time.perf_counter() - item.started) * 1000, 1),
    }
    if scan is not None:
        cal = scan.calibration
        region = cal.region or (None, None, None, None)
        row.update({
            "sop_instance_uid": scan.sop_instance_uid, "frame": scan.frame,
            "series_instance_uid": scan.series_instance_uid, "study_instance_uid": scan.study_instance_uid,
            "sop_class_uid": scan.sop_class_uid, "accession_number": scan.accession_number,
            "patient_id": scan.patient_id, "issuer_of_patient_id": scan.issuer_of_patient_id or None,
            "patient_birth_date": scan.patient_birth_date, "study_date": scan.study_date,
            "spacing_mm_x": cal.spacing_mm_x, "spacing_mm_y": cal.spacing_mm_y, "spacing_source": cal.source.value,
            "region_x0": region[0], "region_y0": region[1], "region_x1": region[2], "region_y1": region[3],
        })
    if scan is not None:
        row.update(_plane_columns(item.planes.get(_scan_key(scan))))
    if item.best is not None:
        scan, bio = item.best
        e = bio.ellipse_mm
        row.update({
            "center_x_mm": e.cx, "center_y_mm": e.cy, "semi_axis_a_mm": e.a, "semi_axis_b_mm": e.b,
            "angle_rad": e.angle, "hc_mm": round(bio.hc_mm, 2), "bpd_mm": round(bio.bpd_mm, 2),
            "ofd_mm": round(bio.ofd_mm, 2), "quality": bio.quality, "hc_tta_spread_mm": bio.tta_spread_mm,
            "head_plane_score": bio.head_plane_score, "flags": ",".join(bio.flags) or None,
            "status": (MeasurementStatus.NEEDS_REVIEW if bio.needs_review else MeasurementStatus.MEASURED).value,
            # Calibration notes (e.g. a region ignored because its bounds exceed the image) and the
            # frames sampled from a cine travel with the row.
            "reason": PLANE_UNCERTAIN if PLANE_UNCERTAIN in bio.flags else None,
            "detail": "; ".join([*scan.calibration.notes, *_plane_notes(item, scan, bio), *_frame_notes(item)]) or None,
        })
        ga = ga_for_centile(item.ga_days_given, scan.last_menstrual_date, scan.study_date)
        row.update(growth_facts(bio.hc_mm, ga, ctx.settings.growth_standard).columns())
    elif item.refused is not None:  # set aside: no HC, no growth facts
        refusal = item.refused[1]
        also = [f"also: {item.error}"] if item.error is not None else []
        row.update({"status": MeasurementStatus.NOT_HEAD.value, "reason": refusal.reason,
                    "head_plane_score": round(refusal.score, 4),
                    "detail": "; ".join([refusal_detail(refusal, item.refused_frames), *also, *_frame_notes(item)])})
    else:
        error = item.error or MeasurementError("no frame could be measured", reason="no_measurement")
        row.update({"status": MeasurementStatus.FAILED.value, "reason": error.reason,
                    "detail": "; ".join([str(error), *_frame_notes(item)])})
        if scan is None:
            row.update(_header_identity(item.path))
    if row.pop("text_cleaned", False) or (scan is not None and scan.text_cleaned):  # NUL or controls removed
        row["flags"] = ",".join(f for f in (row.get("flags"), TEXT_CLEANED_FLAG) if f)
    return MeasurementRow.of(**row)


def _scan_key(scan: Scan) -> tuple[int, Any]:
    """A frame (and region, where a frame has several) of an instance."""
    return scan.frame, scan.calibration.region


def _plane_columns(judgement: PlaneJudgement | None) -> dict[str, Any]:
    """The row's plane label, its probability and the 14 probabilities (all None: no classifier, never guessed)."""
    plane = judgement.plane if judgement is not None else None
    if plane is None:
        return {"plane_label": None, "plane_probability": None, "plane_probabilities": None}
    return {"plane_label": plane.label.value, "plane_probability": round(plane.probability, 4),
            "plane_probabilities": plane.as_dict()}


def _plane_notes(item: WorkItem, scan: Scan, bio: Biometry) -> list[str]:
    """Why a measured frame's plane is uncertain (the decision's words), for the row's detail."""
    judgement = item.planes.get(_scan_key(scan))
    if PLANE_UNCERTAIN not in bio.flags or judgement is None or judgement.decision is None:
        return []
    return [f"plane uncertain: {judgement.decision.why}"]


def frame_note(plan: FramePlan, best_frame: int | None) -> str | None:
    """The record of a sampled cine: how many and which frames were measured, and the one kept.

    None unless frames were skipped by ``FETALHC_MAX_FRAMES`` (every frame, a representative frame or
    frames asked for need no note: the row's frame says it all).
    """
    if not plan.sampled:
        return None
    kept = f"best frame {best_frame}" if best_frame else "no head measured on any of them"
    return (f"cine sampled to {len(plan.frames)} of its {plan.total} frames (frames "
            f"{', '.join(map(str, plan.frames))}; no (0028,6010) Representative Frame Number, "
            f"FETALHC_MAX_FRAMES={len(plan.frames)}); {kept}")


def _frame_notes(item: WorkItem) -> list[str]:
    note = frame_note(item.frames, item.best[0].frame if item.best else None) if item.frames else None
    return [note] if note else []


def _header_identity(path: Path) -> dict[str, Any]:
    """UIDs and patient/study attributes of a file that failed before a Scan existed (if readable)."""
    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except FetalHCError:
        return {}
    cleaned = False

    def text(keyword: str) -> str:  # NUL and control characters removed (dicom_io.text), as for a Scan
        nonlocal cleaned
        value, changed = clean_text(ds.get(keyword, "") or "")
        cleaned = cleaned or changed
        return value

    uid = text("SOPInstanceUID")
    if not uid:
        return {}
    return {
        "sop_instance_uid": uid, "frame": 1, "series_instance_uid": text("SeriesInstanceUID"),
        "study_instance_uid": text("StudyInstanceUID"), "sop_class_uid": text("SOPClassUID"),
        "accession_number": text("AccessionNumber"), "patient_id": text("PatientID"),
        "issuer_of_patient_id": text("IssuerOfPatientID") or None, "study_date": parse_date(ds.get("StudyDate")),
        "patient_birth_date": parse_date(ds.get("PatientBirthDate")), "text_cleaned": cleaned,
    }


def measure_rows(ctx: PipelineContext, items: Sequence[WorkItem]) -> list[MeasurementRow]:
    """Measure the items without storing anything; one ``MeasurementRow`` each.

    Each scan's decoding is bounded by ``FETALHC_MAX_SCAN_MB`` (``over_memory_budget`` failures).
    """
    with scan_budget(ctx.settings.max_scan_mb):
        _measure(ctx, items)
        return [_row(ctx, item) for item in items]


def store_rows(database_url: str, items: Sequence[WorkItem], rows: Sequence[MeasurementRow],
               growth_standard: str | None = None) -> list[MeasurementRow]:
    """Upsert each row with an instance UID and finish each item's job with its outcome; the rows as stored.

    With ``growth_standard``, a row with an HC whose study has an OB-GYN report gets the report's facts
    first (``worker.measure.reports.apply_report_facts``: its dating's GA and centile, the sonographer's HC).
    A file whose instance UID is unknown (unreadable) gets no measurement row, only its job's
    failure. Database errors propagate (transient: the caller retries).
    """
    stored: list[MeasurementRow] = []
    with session_scope(database_url) as session:  # the batch's upserts and job updates: one transaction, few statements
        for row in rows:
            stored.append(apply_report_facts(session, row, growth_standard) if growth_standard is not None else row)
        upsert_measurements(session, [row for row in stored if row.get("sop_instance_uid")])
        finish_jobs(session, [(item.job_id, JOB_STATUS_OF[row["status"]], row.get("reason"), row.get("detail"),
                               row.get("sop_instance_uid")) for item, row in zip(items, stored) if item.job_id is not None])
    return stored


def take_reports(ctx: PipelineContext, items: Sequence[WorkItem]) -> list[WorkItem]:
    """Record the items that are SRs (an OB-GYN report: ``worker.measure.reports``), setting their ``report``;
    the items left to measure. Database errors propagate (transient)."""
    left = []
    for item in items:
        header = sr_header(item.path) if item.report is None else None
        if header is not None:
            item.report = record_report(ctx.settings.database_url, ctx.settings.growth_standard, item.path,
                                        item.job_id, header)
        if item.report is None:
            left.append(item)
    return left


def measure_items(ctx: PipelineContext, items: Sequence[WorkItem]) -> list[MeasurementRow]:
    """Measure the items and store them (``measure_rows`` then ``store_rows``); returns the rows.

    An item that is an SR is not measured and has no row: an OB-GYN report is recorded (``take_reports``),
    its job finished ``done``, and the outcome left on ``item.report``.

    Then, when ``FETALHC_SR_DIR`` or ``FETALHC_SR_DESTINATION`` is set, the DICOM SR of each stored
    measured or needs_review row (``worker.measure.sr_export``: never raises; only the rows' ``sr_status`` records it).
    """
    items = take_reports(ctx, items)
    if not items:
        return []
    rows = measure_rows(ctx, items)
    sr_on = ctx.settings.sr_dir is not None or ctx.settings.sr_destination is not None
    if sr_on:  # the SR owed is stored with its row: one lost before the export is left for the sweep
        rows = mark_owed(rows)
    rows = store_rows(ctx.settings.database_url, items, rows, ctx.settings.growth_standard)
    if sr_on:
        export_and_record(ctx.settings, rows)
    for row in rows:
        log.info("measured job=%s status=%s reason=%s hc_mm=%s ms=%s", row.get("job_id"), row["status"],
                 row.get("reason"), row.get("hc_mm"), row["total_ms"])
    return rows
