"""The ``fetalhc`` command line: one console script, a subcommand per job (``main(argv)``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from models.errors import FetalHCError
from worker.settings import get_settings

log = logging.getLogger("fetalhc")


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=_json_default))


# -- process ---------------------------------------------------------------------------------------------------

OUTPUT_FIELDS = ("path", "sop_instance_uid", "frame", "status", "reason", "detail", "hc_mm", "bpd_mm", "ofd_mm",
                 "quality", "head_plane_score", "flags", "spacing_mm_x", "spacing_mm_y", "spacing_source", "ga_days",
                 "ga_source", "ga_estimate_days", "ga_formula", "hc_z_score", "hc_centile", "growth_standard",
                 "growth_flags", "centile_reason", "model_name", "model_version", "total_ms")


def cmd_process(args: argparse.Namespace) -> int:
    """Measure files in this process (no broker), storing rows in the configured database."""
    from db import create_job, session_scope, upgrade
    from worker.files import expand_paths
    from worker.pipeline import WorkItem, load_context, measure_items

    settings = get_settings()
    upgrade(settings.database_url)
    ctx = load_context(settings)
    paths = list(expand_paths(args.paths))
    ga_days = _manifest_ga(args.manifest, paths)
    exit_code = 0
    for start in range(0, len(paths), settings.batch_size):
        chunk = paths[start : start + settings.batch_size]
        with session_scope(settings.database_url) as session:
            job_ids = [create_job(session, str(p.resolve()), "cli") for p in chunk]
        rows = measure_items(ctx, [WorkItem(p, j, ga_days.get(str(p.resolve()))) for p, j in zip(chunk, job_ids)])
        for row in rows:
            if row["status"] == "failed":
                exit_code = 3
            if args.json:
                _print_json({k: row.get(k) for k in OUTPUT_FIELDS})
            else:
                hc = f"{row['hc_mm']:.1f} mm" if row.get("hc_mm") is not None else "-"
                print(f"{row['path']}: {row['status']} HC {hc}"
                      + (f" ({row['reason']}: {row['detail']})" if row.get("reason") else "")
                      + (f" [{row['flags']}]" if row.get("flags") else ""))
    return exit_code


def _manifest_ga(manifest: str | None, paths: list[Path]) -> dict[str, float]:
    """GA in days per resolved path from a dating manifest CSV (empty without one)."""
    if not manifest:
        return {}
    from worker.manifest import Manifest

    return Manifest.load(manifest).ga_days_for_files(paths)


# -- queue -----------------------------------------------------------------------------------------------------

def cmd_enqueue(args: argparse.Namespace) -> int:
    """Record a job per file and put it on the live (or backfill) queue."""
    from worker.enqueue import enqueue_files
    from worker.files import expand_paths

    paths = list(expand_paths(args.paths))
    summary = enqueue_files(get_settings(), paths, queue=args.queue, source="cli",
                            ga_days=_manifest_ga(args.manifest, paths), batch=args.batch)
    result = {"queued": summary.queued, "deferred": summary.deferred, "job_ids": summary.job_ids}
    if args.json:
        _print_json(result)
    else:
        print(f"queued {summary.queued} scans on '{args.queue}'"
              + (f"; {summary.deferred} recorded but not sent (broker down), the sweeper will send them"
                 if summary.deferred else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Start a Celery worker on the live and backfill queues (live first), with sweeper and metrics."""
    from worker.celery_app import run_worker

    run_worker(get_settings(), concurrency=args.concurrency, queues=args.queues, loglevel=args.loglevel,
               hostname=args.hostname)
    return 0


def cmd_ping_worker(args: argparse.Namespace) -> int:
    """Exit 0 when this host's worker (or ``--hostname``) answers a ping through the broker, 1 when it
    does not; an unreachable broker passes (2 with ``--strict``)."""
    from worker.liveness import ping_worker

    result = ping_worker(get_settings(), args.hostname, args.timeout)
    if result.alive:
        print(f"{result.node} answered in {result.seconds:.2f} s")
        return 0
    if not result.broker_reachable:
        print(f"the broker cannot be reached, so {result.node} was not asked; "
              + ("failing (--strict)" if args.strict else "passing: restarting the worker would not help"),
              file=sys.stderr)
        return 2 if args.strict else 0
    print(f"{result.node} did not answer within {args.timeout:g} s (worker hung, stopped, or broker unreachable)",
          file=sys.stderr)
    return 1


def cmd_requeue(args: argparse.Namespace) -> int:
    """Queue again the jobs stuck in received/queued/running for longer than --older-than (see worker.sweeper)."""
    from worker.sweeper import sweep

    summary = sweep(get_settings(), dt.timedelta(minutes=args.older_than), force=args.force)
    if args.json:
        _print_json(summary.as_dict())
    else:
        print(f"requeued {len(summary.requeued)} stale jobs"
              + (f", {summary.deferred} could not be sent" if summary.deferred else "")
              + (f"; {summary.waiting} left alone while their queue is busy (--force sends them)"
                 if summary.waiting else ""))
    return 0


def cmd_spool(args: argparse.Namespace) -> int:
    """``spool prune``: delete spool files of jobs finished over N days ago, and old orphans (spool_retention)."""
    from db import upgrade
    from worker.spool_retention import prune_spool

    settings = get_settings()
    days = args.older_than_days if args.older_than_days is not None else settings.spool_retention_days
    if args.older_than_days is None and not days:
        raise ValueError("no retention: pass --older-than-days N or set FETALHC_SPOOL_RETENTION_DAYS")
    if days < 0:
        raise ValueError(f"--older-than-days {days:g}: a number of days, at least 0")
    upgrade(settings.database_url)
    summary = prune_spool(settings, dt.timedelta(days=days), dry_run=args.dry_run)
    if args.json:
        _print_json({**summary.as_dict(), "older_than_days": days})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {summary.files} spool files of jobs finished over {days:g} days ago and {summary.orphans} "
              f"orphans, {summary.freed_bytes / 1e6:.1f} MB; {summary.jobs_marked} jobs marked; "
              f"{summary.kept_in_use} old files kept for jobs still in use"
              + (f"; {summary.errors} could not be deleted" if summary.errors else ""))
    return 3 if summary.errors else 0


# -- ingest and backfill ---------------------------------------------------------------------------------------

def _ingest_settings(args: argparse.Namespace) -> Any:
    """The settings, with the command line's ingest options (AE title, port, ...) laid over them."""
    settings = get_settings()
    overrides = {name: getattr(args, name) for name in ("ae_title", "listen_host", "listen_port", "accept_other")
                 if getattr(args, name, None) is not None}
    return settings.replace(**overrides) if overrides else settings


def cmd_listen(args: argparse.Namespace) -> int:
    """Run the DICOM storage SCP: ultrasound in, spooled, recorded, queued on 'live'."""
    from worker.ingest.listener import start_listener

    settings = _ingest_settings(args)
    print(f"listening as {settings.ae_title} on {settings.listen_host}:{settings.listen_port} "
          f"(spool {settings.spool_dir}; other SOP classes: {settings.accept_other}); Ctrl-C stops", file=sys.stderr)
    start_listener(settings, block=True)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Poll a drop folder; queue each file on 'live' once it has stopped changing."""
    from worker.ingest.watch import DropFolderWatcher

    watcher = DropFolderWatcher(get_settings(), Path(args.folder), settle_s=args.settle)
    if args.once:
        from db import upgrade

        upgrade(watcher.settings.database_url)
        counts = watcher.poll()
    else:
        print(f"watching {args.folder} (complete after {watcher.settle_s:g} s unchanged); Ctrl-C stops",
              file=sys.stderr)
        try:
            watcher.run(interval_s=args.interval)
        except KeyboardInterrupt:
            pass
        counts = watcher.counts
    result = {"queued": counts.queued, "deferred": counts.deferred, "ignored": counts.ignored,
              "rejected": counts.rejected, "retry": counts.retry}
    if args.json:
        _print_json(result)
    else:
        print(", ".join(f"{k} {v}" for k, v in result.items()))
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if "-" in text else dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD or YYYYMMDD") from None


def cmd_backfill(args: argparse.Namespace) -> int:
    """Queue an archive's ultrasound scans on 'backfill': resumable, rate- and in-flight-bounded."""
    from worker.backfill import open_source, run_backfill

    settings = _ingest_settings(args)
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise ValueError(f"--from {args.date_from} is after --to {args.date_to}")
    from worker.backfill.dimse import RetrieveError

    source = open_source(args.source, settings, retrieve=args.retrieve, move_ae=args.move_ae,
                         move_port=args.move_port)
    try:
        summary = run_backfill(settings, source, since=args.date_from, until=args.date_to, dry_run=args.dry_run,
                               rate=args.rate, max_in_flight=args.max_in_flight,
                               progress=False if args.no_progress else None)
    except RetrieveError as exc:  # the archive could not be searched at all (association refused, C-FIND failed)
        print(f"fetalhc backfill: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(summary.as_dict())
    else:
        print(summary.line())
    return 130 if summary.interrupted else (3 if summary.failed else 0)


# -- results ---------------------------------------------------------------------------------------------------

RESULT_COLUMNS = ("study_date", "patient_id", "sop_instance_uid", "frame", "status", "hc_mm", "ga_days",
                  "hc_centile", "reason")


def cmd_results(args: argparse.Namespace) -> int:
    """Print stored measurements (table, --json lines or --csv); not_head rows only with ``--status not_head``."""
    import csv

    from db import MeasurementStatus, query_measurements, row_dict, session_scope, upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        rows = [row_dict(r) for r in query_measurements(session, patient_id=args.patient, study_uid=args.study,
                                                         status=args.status, limit=args.limit,
                                                         exclude_statuses=(MeasurementStatus.NOT_HEAD.value,))]
    if args.json:
        for row in rows:
            _print_json(row)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["sop_instance_uid"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        print("  ".join(f"{c:<14}" for c in RESULT_COLUMNS))
        for row in rows:
            cells = [row.get(c) for c in RESULT_COLUMNS]
            print("  ".join(f"{(f'{v:.1f}' if isinstance(v, float) else str(v if v is not None else '-'))[:40]:<14}"
                            for v in cells))
        print(f"{len(rows)} rows")
    if args.chart:
        from worker.chart import draw_growth_chart

        draw_growth_chart(rows, Path(args.chart), settings.growth_standard)
        print(f"growth chart written to {args.chart}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the web page until Ctrl-C (see worker.api)."""
    from worker.api import make_server

    logging.getLogger("worker.api").setLevel(logging.INFO)  # request lines: method, path, status (no query)
    settings = get_settings()
    server = make_server(settings, args.host, args.port)
    print(f"serving the fetalhc API and page on {server.url}/ "
          f"({'token required' if settings.api_token else 'no token'}); Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_centile(args: argparse.Namespace) -> int:
    """Growth facts of one HC value: GA estimates, and z/centile when a GA is given."""
    from models.growth import ga_from_hc, hc_centile

    estimates = {f: ga_from_hc(args.hc_mm, f) for f in ("intergrowth_2016", "hadlock_1984")}
    result: dict[str, Any] = {"hc_mm": args.hc_mm, "ga_estimates": {
        f: {"ga_days": round(e.ga_days, 1), "in_range": e.in_range, "note": e.note} for f, e in estimates.items()}}
    if args.ga_days is not None:
        c = hc_centile(args.hc_mm, args.ga_days, args.standard)
        result.update({"ga_days": args.ga_days, "standard": c.standard, "z_score": c.z_score, "centile": c.centile,
                       "flags": list(c.flags), "reason": c.reason})
    if args.json:
        _print_json(result)
        return 0
    for f, e in estimates.items():
        weeks, days = divmod(round(e.ga_days), 7)
        print(f"GA from HC by {f}: {e.ga_days:.1f} days ({weeks}+{days} weeks)" + ("" if e.in_range else f" - {e.note}"))
    if args.ga_days is not None:
        if result["centile"] is None:
            print(f"{args.standard}: no centile ({result['reason']})")
        else:
            print(f"{args.standard}: z = {result['z_score']:.2f}, centile = {result['centile']:.1f}"
                  + (f" [{', '.join(result['flags'])}]" if result["flags"] else ""))
    return 0


# -- models ----------------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    """Train a segmentation model (see models.train)."""
    from models.train import train
    from models.train_config import config_from_args

    best = train(config_from_args(args))
    _print_json(best)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on an HC18-layout folder (see models.evaluate)."""
    from models.evaluate import run_from_args

    return run_from_args(args)


def cmd_eval_gate(args: argparse.Namespace) -> int:
    """Validate the head-plane gate on held-out images through the measuring path (see models.gate_eval)."""
    from models.gate_eval import evaluate_gate, format_report, held_out_items
    from models.head_plane import load_gate
    from models.weights import load_weights

    items = held_out_items(Path(args.data))
    if not any(i.source == "hc18" for i in items):
        raise FileNotFoundError(f"no HC18 validation heads under {args.data} (expected hc18/, us-negatives/, "
                                "other-heads/)")
    gate = load_gate(args.gate)
    if args.threshold is not None:
        gate = gate.with_threshold(args.threshold)
    report = evaluate_gate(gate, load_weights(get_settings().weights), items)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the measurement of generated 800x540 scans (or of one cine, ``--cine``) on this machine."""
    from worker.bench import run_bench, run_cine_bench

    if args.cine:
        report = run_cine_bench(get_settings(), Path(args.cine), threads=args.threads)
    else:
        report = run_bench(get_settings(), n=args.n, threads=args.threads)
    if args.json:
        _print_json(report)
    else:
        for key, value in report.items():
            print(f"{key:<28} {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate sample scans with known HC, measure them with the shipped model into SQLite."""
    import os

    from worker.demo import find_hc18, format_report, write_samples

    out = Path(args.out)
    os.environ.setdefault("FETALHC_DATABASE_URL", f"sqlite:///{(out / 'demo.db').resolve()}")
    get_settings.cache_clear()
    settings = get_settings()
    from db import create_job, session_scope, upgrade
    from worker.pipeline import WorkItem, load_context, measure_items

    hc18 = find_hc18(args.hc18)
    print("samples: the real scans shipped in worker/demo_samples (HC18 heads, two images that are not head "
          "planes) and synthetic phantoms; HC18 data: "
          + (f"{hc18} (more held-out images)" if hc18 else "not found (../shared/hc18), none added"))
    samples = write_samples(out / "scans", hc18)
    upgrade(settings.database_url)
    ctx = load_context(settings)
    with session_scope(settings.database_url) as session:
        job_ids = [create_job(session, str(s.path), "demo") for s in samples]
    rows = measure_items(ctx, [WorkItem(s.path, j) for s, j in zip(samples, job_ids)])
    gate = "off" if ctx.gate is None else f"on (threshold {ctx.gate.threshold:.3f})"
    print(f"model {ctx.model.model_name} {ctx.model.model_version[:12]} on {ctx.device}; head-plane gate {gate}; "
          f"results in {settings.database_url}")
    print(format_report(samples, rows))
    return 0


def cmd_convert_hc18(args: argparse.Namespace) -> int:
    """Write HC18 PNGs (with their CSV pixel size) as US Image Storage files, as a scanner would."""
    from worker.convert_hc18 import convert_hc18

    study_date = dt.date.fromisoformat(args.study_date) if args.study_date else None
    converted = convert_hc18(Path(args.src), Path(args.out), jpeg=args.jpeg, study_date=study_date,
                             lmp_days=args.lmp_days, lmp_from_hc=args.lmp_from_hc, limit=args.limit,
                             margin_px=args.margin)
    if args.json:
        for scan in converted:
            _print_json({"name": scan.name, "path": scan.path, "pixel_size_mm": scan.pixel_size_mm,
                         "hc_mm": scan.hc_mm, "region": list(scan.region)})
    else:
        print(f"converted {len(converted)} HC18 images to {args.out}"
              + (" (JPEG baseline, YBR_FULL_422)" if args.jpeg else " (uncompressed)"))
    return 0


def cmd_sr(args: argparse.Namespace) -> int:
    """``sr send DIR``: C-STORE the SR files in DIR (e.g. those a PACS outage left unsent) again."""
    from worker.sr_export import send_folder

    settings = get_settings()
    destination = args.destination or settings.sr_destination
    if not destination:
        raise ValueError("no destination: pass --destination dimse://AETITLE@host:port or set FETALHC_SR_DESTINATION")
    summary = send_folder(Path(args.folder), destination, settings.ae_title, remove_sent=args.remove_sent)
    if args.json:
        _print_json({"sent": len(summary.sent), "failed": len(summary.failed),
                     "reasons": sorted(set(summary.failed.values()))})
    else:
        print(f"sent {len(summary.sent)} SR file(s), {len(summary.failed)} failed"
              + (f" ({'; '.join(sorted(set(summary.failed.values())))})" if summary.failed else ""))
    return 3 if summary.failed else 0


def cmd_db(args: argparse.Namespace) -> int:
    """``db upgrade``: migrate the schema to the newest revision; ``db current``: print the revision now."""
    from db import SchemaError, current_revision, head_revision, upgrade

    url = get_settings().database_url
    try:
        revision = upgrade(url) if args.action == "upgrade" else current_revision(url)
    except SchemaError as exc:
        print(f"fetalhc db {args.action}: error: {exc}", file=sys.stderr)
        return 1
    head = head_revision()
    if args.json:
        _print_json({"revision": revision, "head": head, "up_to_date": revision == head})
    elif args.action == "upgrade":
        print(f"database is up to date (schema revision {revision})")
    else:
        state = "up to date" if revision == head else f"this fetalhc's is {head}: run `fetalhc db upgrade`"
        print(f"schema revision {revision or 'none'} ({state})")
    return 0


# -- parser ----------------------------------------------------------------------------------------------------

MANIFEST_HELP = ("dating CSV: a key column (sop_instance_uid | study_instance_uid | accession_number) and one of "
                 "ga_days | lmp | edd (YYYY-MM-DD); the GA it gives is used for centiles")


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their arguments."""
    parser = argparse.ArgumentParser(prog="fetalhc", description="Fetal head circumference from ultrasound DICOM.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="measure files in this process (no broker)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per scan")
    p.add_argument("--manifest", default=None, help=MANIFEST_HELP)
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("enqueue", help="queue files or folders for the workers")
    p.add_argument("paths", nargs="+")
    p.add_argument("--queue", default="live", choices=("live", "backfill"))
    p.add_argument("--manifest", default=None, help=MANIFEST_HELP)
    p.add_argument("--batch", type=int, default=1,
                   help="scans per message (fetalhc.measure_batch; for GPU workers); default 1")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("worker", help="start a Celery worker")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--queues", default="live,backfill")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("ping-worker", help="liveness probe: does this host's worker answer through the broker?")
    p.add_argument("--hostname", default=None, help="the worker's --hostname (default: celery@<this host>)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) when the broker cannot be reached")
    p.set_defaults(func=cmd_ping_worker)

    p = sub.add_parser("requeue", help="re-queue jobs stuck in received/queued/running")
    p.add_argument("--stale", action="store_true", help="(the default) only jobs older than --older-than")
    p.add_argument("--older-than", type=float, default=30.0, help="minutes (default 30)")
    p.add_argument("--force", action="store_true",
                   help="also send queued/running jobs while their queue still holds messages (may duplicate)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("spool", help="spool retention: delete files of scans finished long ago")
    p.add_argument("action", choices=("prune",))
    p.add_argument("--older-than-days", type=float, default=None,
                   help="jobs finished more than N days ago (FETALHC_SPOOL_RETENTION_DAYS)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spool)

    p = sub.add_parser("listen", help="DICOM C-STORE listener (storage SCP) feeding the live queue")
    p.add_argument("--ae-title", dest="ae_title", default=None, help="our AE title (FETALHC_AE_TITLE, FETALHC)")
    p.add_argument("--host", dest="listen_host", default=None, help="address to bind (FETALHC_LISTEN_HOST, 0.0.0.0)")
    p.add_argument("--port", dest="listen_port", type=int, default=None, help="TCP port (FETALHC_LISTEN_PORT, 11112)")
    p.add_argument("--accept-other", dest="accept_other", default=None, choices=("ignore", "refuse"),
                   help="non-ultrasound instances: accept and drop, or refuse (FETALHC_ACCEPT_OTHER, ignore)")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("watch", help="watch a drop folder and queue complete files on the live queue")
    p.add_argument("folder")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds a file must stay unchanged to count as complete (FETALHC_WATCH_SETTLE, 5)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p.add_argument("--once", action="store_true", help="one pass, then exit (for cron and scripts)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("backfill", help="queue an archive (folder, dimse://AET@host:port, http(s):// DICOMweb)")
    p.add_argument("source", help="a folder, dimse://AETITLE@host:port, or a DICOMweb root URL")
    p.add_argument("--from", dest="date_from", type=_date, default=None, help="first study date (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", type=_date, default=None, help="last study date (YYYY-MM-DD)")
    p.add_argument("--dry-run", action="store_true", help="count what would be queued; queue nothing")
    p.add_argument("--rate", type=float, default=None, help="at most N scans queued per second")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="at most N backfill jobs unfinished at once (FETALHC_BACKFILL_MAX_IN_FLIGHT, 32)")
    p.add_argument("--ae-title", dest="ae_title", default=None, help="our calling AE title for DIMSE")
    p.add_argument("--retrieve", default="get", choices=("get", "move"),
                   help="DIMSE retrieval: C-GET on our association (default) or C-MOVE to --move-ae")
    p.add_argument("--move-ae", default="FETALHC_BF", help="C-MOVE destination AE title the PACS knows")
    p.add_argument("--move-port", type=int, default=11113, help="port of the temporary C-MOVE destination")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("results", help="print stored measurements")
    p.add_argument("--patient", default=None)
    p.add_argument("--study", default=None, help="Study Instance UID")
    p.add_argument("--status", default=None, choices=("measured", "needs_review", "not_head", "failed"),
                   help="only rows of this status (without it: every status but not_head, the images set aside "
                        "as not a head plane)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--chart", default=None, help="write a growth chart PNG of the rows")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("serve", help="HTTP API and web page (results, stats, try one scan)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; set FETALHC_API_TOKEN before binding wider)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("centile", help="GA estimate, z-score and centile of one HC")
    p.add_argument("--hc-mm", type=float, required=True)
    p.add_argument("--ga-days", type=float, default=None)
    p.add_argument("--standard", default="intergrowth", choices=("intergrowth", "who"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_centile)

    from models.train_config import build_parser as train_parser

    p = sub.add_parser("train", help="train a segmentation model on an HC18 folder")
    train_parser(p)
    p.set_defaults(func=cmd_train)

    from models.evaluate_config import build_parser as eval_parser

    p = sub.add_parser("eval", help="HC18 metrics, plots and submission CSV for a model")
    eval_parser(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-gate", help="head-plane gate on held-out heads and non-heads: AUC, kept, refused")
    p.add_argument("--data", default="../shared", help="folder holding hc18/, us-negatives/ and other-heads/")
    p.add_argument("--gate", default=None, help="gate file (default: the shipped gate)")
    p.add_argument("--threshold", type=float, default=None, help="another operating point (0-1)")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_gate)

    p = sub.add_parser("bench", help="measure inference speed")
    p.add_argument("-n", type=int, default=20, help="scans to time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cine", default=None, metavar="PATH",
                   help="time the pipeline on this multi-frame DICOM instead (frames per FETALHC_MAX_FRAMES)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="measure generated sample scans end to end (SQLite)")
    p.add_argument("--out", default="var/demo")
    p.add_argument("--hc18", default=None, help="HC18 folder (default ../shared/hc18 when present)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("convert-hc18", help="write HC18 PNGs as US Image Storage DICOM files")
    p.add_argument("src", help="HC18 folder (with training_set/) or an image folder beside its pixel-size CSV")
    p.add_argument("out", help="folder for the .dcm files")
    p.add_argument("--jpeg", action="store_true", help="JPEG baseline, YBR_FULL_422 (lossy) as scanners write")
    p.add_argument("--study-date", default=None, help="(0008,0020) Study Date, YYYY-MM-DD")
    lmp = p.add_mutually_exclusive_group()
    lmp.add_argument("--lmp-days", type=int, default=None,
                     help="(0010,21D0) Last Menstrual Date this many days before the study date")
    lmp.add_argument("--lmp-from-hc", action="store_true",
                     help="Last Menstrual Date from each image's reference HC (Hadlock GA)")
    p.add_argument("--limit", type=int, default=None, help="convert the first N images only")
    p.add_argument("--margin", type=int, default=32, help="frame margin around the image in pixels (0: none)")
    p.add_argument("--json", action="store_true", help="one JSON object per written file")
    p.set_defaults(func=cmd_convert_hc18)

    p = sub.add_parser("sr", help="DICOM SR reports: send a folder of SR files to the PACS again")
    p.add_argument("action", choices=("send",))
    p.add_argument("folder", help="folder of SR .dcm files (FETALHC_SR_DIR, or <FETALHC_SPOOL_DIR>/sr)")
    p.add_argument("--destination", default=None, help="dimse://AETITLE@host:port (FETALHC_SR_DESTINATION)")
    p.add_argument("--remove-sent", action="store_true", help="delete each file the PACS stored")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sr)

    p = sub.add_parser("db", help="database administration")
    p.add_argument("action", choices=("upgrade", "current"),
                   help="upgrade: migrate the schema to the newest revision; current: print the revision now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fetalhc`` console script."""
    from worker.logs import configure_logging

    args = build_parser().parse_args(argv)
    try:
        configure_logging(get_settings().log_format, logging.INFO if args.verbose else logging.WARNING)
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:  # a bad option, setting or path (ConfigError is a ValueError)
        print(f"fetalhc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FetalHCError as exc:  # the one place the CLI turns fetalhc's own errors into a line and a status
        hint = " (temporary: try again later)" if exc.transient else ""
        print(f"fetalhc {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
