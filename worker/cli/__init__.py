"""The ``fetalhc`` command line: one console script, a subcommand per job (``main(argv)``).

One module per command group (``process``, ``queueing``, ``ingesting``, ``results``, ``training``, ``tools``,
``admin``, ``tokens``); this one builds the parser and runs the chosen command. Nothing imports ``worker.cli``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from models.errors import FetalHCError
from models.plane.classes import PlaneClass
from worker.cli.admin import cmd_db, cmd_sr
from worker.cli.bench import add_arguments as add_bench_arguments
from worker.cli.conflicts import cmd_conflicts
from worker.cli.ingesting import _date, cmd_backfill, cmd_listen, cmd_watch
from worker.cli.process import OUTPUT_FIELDS, cmd_process
from worker.cli.queueing import (
    cmd_enqueue,
    cmd_ping_worker,
    cmd_requeue,
    cmd_spool,
    cmd_worker,
)
from worker.cli.results import RESULT_COLUMNS, cmd_agreement, cmd_centile, cmd_results, cmd_serve
from worker.cli.tokens import cmd_token
from worker.cli.tools import cmd_bench, cmd_convert_hc18, cmd_demo, cmd_export_labels
from worker.cli.training import cmd_eval, cmd_eval_gate, cmd_train
from worker.core.logs import configure_logging
from worker.core.settings import get_settings

log = logging.getLogger("fetalhc")

__all__ = ["OUTPUT_FIELDS", "RESULT_COLUMNS", "build_parser", "main"]


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
                   help="only rows of this (the model's) status (without it: every row that is a head plane after "
                        "people's reviews: not_head rows left out unless a reviewer corrected them, rows rejected "
                        "as rejected_not_head left out)")
    p.add_argument("--plane", default=None, choices=[c.value for c in PlaneClass],
                   help="only rows of this standard plane (SonoNet-16's label, FETALHC_PLANE_CLASSIFIER), of every "
                        "status: e.g. abdominal")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--chart", default=None, help="write a growth chart PNG of the rows")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("conflicts", help="arrivals kept aside: another patient's data or other pixels under a UID "
                                         "already taken, reports of another patient (intake_conflicts)")
    p.add_argument("--uid", default=None, help="only this SOP Instance UID")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per line, every column")
    p.set_defaults(func=cmd_conflicts)

    p = sub.add_parser("agreement", help="Bland-Altman of fetalhc vs the sonographer's HC (OB-GYN reports)")
    p.add_argument("--since", type=_date, default=None, help="studies on or after this date (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the Bland-Altman plot here")
    p.set_defaults(func=cmd_agreement)

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

    from models.training.train_config import build_parser as train_parser

    p = sub.add_parser("train", help="train a segmentation model on an HC18 folder")
    train_parser(p)
    p.set_defaults(func=cmd_train)

    from models.evaluation.evaluate_config import build_parser as eval_parser

    p = sub.add_parser("eval", help="HC18 metrics, plots and submission CSV for a model")
    eval_parser(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-gate", help="plane decision on held-out heads and non-heads, the gate alone and with "
                                         "the plane classifier: AUC, kept, review, refused")
    p.add_argument("--data", default="../shared", help="folder holding hc18/, us-negatives/ and other-heads/")
    p.add_argument("--gate", default=None, help="gate file (default: the shipped gate)")
    p.add_argument("--classifier", default=None,
                   help="SonoNet16.npz for the second configuration (default FETALHC_PLANE_CLASSIFIER; none: the "
                        "gate alone only)")
    p.add_argument("--threshold", type=float, default=None, help="another operating point (0-1)")
    p.add_argument("--backend", default=None, choices=["auto", "torch", "openvino", "onnxruntime"],
                   help="inference backend (default FETALHC_BACKEND)")
    p.add_argument("--precision", default=None, choices=["auto", "f32", "bf16"],
                   help="the segmentation network's arithmetic (default FETALHC_PRECISION; the gate's CNN is f32)")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_gate)

    p = sub.add_parser("bench", help="measure inference speed")
    p.add_argument("-n", type=int, default=20, help="scans to time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cine", default=None, metavar="PATH",
                   help="time the pipeline on this multi-frame DICOM instead (frames per FETALHC_MAX_FRAMES)")
    p.add_argument("--json", action="store_true")
    add_bench_arguments(p)
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

    p = sub.add_parser("export-labels", help="frames people accepted or corrected, in HC18's layout, to train on")
    p.add_argument("--out", required=True, help="folder to write (training_set/ and its CSV)")
    p.add_argument("--since", type=_date, default=None, help="decisions on or after this date (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_labels)

    p = sub.add_parser("token", help="named API tokens (reviewers): add NAME, list, revoke NAME")
    p.add_argument("action", choices=("add", "list", "revoke"))
    p.add_argument("name", nargs="?", default=None, help="the reviewer's name (no whitespace), for add and revoke")
    p.add_argument("--file", type=Path, default=None, help="the token file (default FETALHC_API_TOKENS_FILE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("db", help="database administration")
    p.add_argument("action", choices=("upgrade", "current"),
                   help="upgrade: migrate the schema to the newest revision; current: print the revision now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fetalhc`` console script."""
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
