"""Scans that arrive by themselves and the archive: ``listen``, ``watch``, ``backfill``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).


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
