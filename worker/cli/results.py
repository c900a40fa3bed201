"""Reading results: ``results`` (and its growth chart), ``serve`` (the API and page), ``centile``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).

RESULT_COLUMNS = ("study_date", "patient_id", "sop_instance_uid", "frame", "status", "hc_mm", "ga_days",
                  "hc_centile", "reason", "plane_label",
                  # after people's reviews: the HC to use, and who decided what (empty: nobody has yet)
                  "effective_status", "effective_hc_mm", "review_decision", "reviewed_by")


def cmd_results(args: argparse.Namespace) -> int:
    """Print stored measurements (table, --json lines or --csv); rows that are in effect no head plane (the gate's
    not_head unless a reviewer corrected it, rows rejected as rejected_not_head) only with ``--status`` or ``--plane``
    (rows of a standard plane, every status)."""
    import csv
    import json

    from db import (
        query_measurements,
        row_dict,
        session_scope,
        upgrade,
    )

    settings = get_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        rows = [row_dict(r) for r in query_measurements(session, patient_id=args.patient, study_uid=args.study,
                                                         status=args.status, limit=args.limit, plane=args.plane,
                                                         hide_not_head=True)]
    if args.json:
        for row in rows:
            _print_json(row)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["sop_instance_uid"])
        writer.writeheader()
        writer.writerows({k: json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else v for k, v in row.items()}
                         for row in rows)
    else:
        print("  ".join(f"{c:<14}" for c in RESULT_COLUMNS))
        for row in rows:
            cells = [row.get(c) for c in RESULT_COLUMNS]
            print("  ".join(f"{(f'{v:.1f}' if isinstance(v, float) else str(v if v is not None else '-'))[:40]:<14}"
                            for v in cells))
        print(f"{len(rows)} rows")
    if args.chart:
        from worker.tools.chart import draw_growth_chart

        # the effective HC: a reviewer's correction replaces the model's, a rejected image has none to plot
        draw_growth_chart([{**row, "hc_mm": row["effective_hc_mm"]} for row in rows], Path(args.chart),
                          settings.growth_standard)
        print(f"growth chart written to {args.chart}", file=sys.stderr)
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    """Bland-Altman agreement of fetalhc's HC with the sonographer's (from the OB reports) over stored studies, and
    of both with the reviewers' confirmed HCs (a third reader)."""
    from db import agreement_pairs, reviewed_hcs, session_scope, upgrade
    from worker.tools.agreement import agreement_report, draw_bland_altman, reviewer_agreement

    settings = get_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        pairs = agreement_pairs(session, args.since)
        reviewed = reviewed_hcs(session, args.since)
    report = agreement_report(pairs)
    report["reviewer"] = reviewer_agreement(reviewed)
    if args.plot:
        if not pairs:
            raise ValueError("no stored image has both fetalhc's and a sonographer's HC: nothing to plot")
        draw_bland_altman(pairs, Path(args.plot))
        print(f"Bland-Altman plot written to {args.plot}", file=sys.stderr)
    if args.json:
        _print_json(report)
        return 0

    def line(name: str, a: dict[str, Any]) -> str:
        loa = (f"limits {a['lower_loa_mm']:+.2f} to {a['upper_loa_mm']:+.2f} mm" if a["sd_mm"] is not None
               else "limits need 2 pairs")
        return f"{name:24s} n={a['n']:5d}  bias {a['bias_mm']:+.2f} mm  {loa}  mean |diff| {a['mean_abs_diff_mm']:.2f} mm"

    overall = report["overall"]
    if overall is None:
        print("no stored image has both fetalhc's and a sonographer's HC (they come from OB-GYN SR reports)")
    else:
        print("fetalhc minus sonographer HC (Bland-Altman)")
        print(line("all studies", overall))
        for title, key in (("by scanner model", "by_scanner_model"), ("by month", "by_month")):
            print(title)
            for name, a in report[key].items():
                print(line(f"  {name}", a))
    for key, title in (("fetalhc_vs_reviewer", "fetalhc minus reviewer HC"),
                       ("sonographer_vs_reviewer", "sonographer minus reviewer HC")):
        section = report["reviewer"][key]
        if section["overall"] is None:
            print(f"{title}: no image has both (reviewers confirm HCs on the page's Review view)")
            continue
        counts = ", ".join(f"{n} {d}" for d, n in sorted(section["decisions"].items()))
        print(f"{title} ({counts})")
        print(line("all reviewed", section["overall"]))
        for name, a in section["by_month"].items():
            print(line(f"  {name}", a))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the web page until Ctrl-C (see worker.api)."""
    from worker.api import make_server

    logging.getLogger("worker.api").setLevel(logging.INFO)  # request lines: method, path, status (no query)
    settings = get_settings()
    server = make_server(settings, args.host, args.port)
    print(f"serving the fetalhc API and page on {server.url}/ "
          f"({'token required' if server.app.auth_required else 'no token'}); Ctrl-C stops", file=sys.stderr)
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
