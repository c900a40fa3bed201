"""The queue's commands: ``enqueue``, ``worker``, ``ping-worker``, ``requeue``, ``spool prune``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from worker.cli.output import _print_json
from worker.cli.process import _manifest_ga
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Record a job per file and put it on the live (or backfill) queue."""
    from pathlib import Path

    from worker.core.files import expand_paths
    from worker.queue.enqueue import enqueue_files

    for raw in args.paths:  # a wrong name stops the command before any job is recorded
        if not Path(raw).exists():
            raise FileNotFoundError(f"{raw} does not exist")
    if args.manifest:  # the manifest is matched against the whole list
        paths = list(expand_paths(args.paths))
        ga_days = _manifest_ga(args.manifest, paths)
    else:  # an archive's paths are streamed: memory stays flat however many files
        paths, ga_days = expand_paths(args.paths), None
    summary = enqueue_files(get_settings(), paths, queue=args.queue, source="cli", ga_days=ga_days, batch=args.batch)
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
    from worker.ops.worker_process import run_worker

    run_worker(get_settings(), concurrency=args.concurrency, queues=args.queues, loglevel=args.loglevel,
               hostname=args.hostname)
    return 0


def cmd_ping_worker(args: argparse.Namespace) -> int:
    """Exit 0 when this host's worker (or ``--hostname``) answers a ping through the broker, 1 when it
    does not; an unreachable broker passes (2 with ``--strict``)."""
    from worker.ops.liveness import ping_worker

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
    """Queue again the jobs stuck in received/queued/running for longer than --older-than (see worker.queue.sweep)."""
    from worker.queue.sweep import sweep

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
    from worker.ops.spool_retention import prune_spool

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
