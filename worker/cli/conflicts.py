"""``fetalhc conflicts``: arrivals kept aside because they contradict an earlier one (``intake_conflicts``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from worker.core.settings import get_settings

COLUMNS = ("id", "created_at", "reason", "source", "sop_instance_uid", "patient_id_existing", "patient_id_received",
           "job_id", "kept_path")


def cmd_conflicts(args: argparse.Namespace) -> int:
    """Print the newest conflicts (a table, or ``--json`` lines with every column): patient IDs on the terminal,
    where an administrator asked for them, never in a log."""
    from db import session_scope, upgrade
    from db.conflicts import list_conflicts

    settings = get_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        rows = list_conflicts(session, sop_instance_uid=args.uid, limit=args.limit)
    if args.json:
        for row in rows:
            print(json.dumps({k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}))
        return 0
    print("  ".join(COLUMNS))
    for row in rows:
        print("  ".join(str(row[c].isoformat(timespec="seconds") if isinstance(row[c], dt.datetime) else row[c])
                        for c in COLUMNS))
    return 0
