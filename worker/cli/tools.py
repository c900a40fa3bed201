"""Tools: ``bench``, ``demo``, ``convert-hc18``, ``export-labels``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the measurement of generated 800x540 scans (or of one cine, ``--cine``) on this machine."""
    from worker.cli.bench import build_report, wants_report, write_report
    from worker.tools.bench import run_bench, run_cine_bench

    if wants_report(args):
        write_report(build_report(get_settings(), args), args.out)
        return 0
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

    from worker.tools.demo import find_hc18, format_report, write_samples

    out = Path(args.out)
    os.environ.setdefault("FETALHC_DATABASE_URL", f"sqlite:///{(out / 'demo.db').resolve()}")
    get_settings.cache_clear()
    settings = get_settings()
    from db import create_job, session_scope, upgrade
    from worker.measure.pipeline import WorkItem, load_context, measure_items

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
    from worker.tools.convert_hc18 import convert_hc18

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


def cmd_export_labels(args: argparse.Namespace) -> int:
    """Write the frames people accepted or corrected in HC18's layout (``fetalhc train --extra-data DIR``)."""
    from worker.tools.export_labels import export_labels

    summary = export_labels(get_settings(), Path(args.out), args.since)
    if args.json:
        _print_json({"out": args.out, "written": len(summary.written), "files": summary.written,
                     "skipped": {str(k): v for k, v in summary.skipped.items()}})
    else:
        print(f"{len(summary.written)} reviewed frame(s) written to {args.out} in HC18's layout"
              + (f"; {len(summary.skipped)} passed over" if summary.skipped else ""))
        for ident, why in summary.skipped.items():
            print(f"  measurement {ident}: {why}")
        print(f"train on them: fetalhc train --data <HC18 folder> --extra-data {args.out}")
    return 0
