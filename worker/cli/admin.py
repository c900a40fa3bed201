"""Administration: ``sr send`` (SR files to the PACS again), ``db upgrade`` / ``db current``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).


def cmd_sr(args: argparse.Namespace) -> int:
    """``sr send DIR``: C-STORE the SR files in DIR (e.g. those a PACS outage left unsent) again."""
    from worker.measure.sr_export import send_folder

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
