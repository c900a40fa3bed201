"""The model's commands: ``train``, ``eval``, ``eval-gate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).


def cmd_train(args: argparse.Namespace) -> int:
    """Train a segmentation model (see models.training.train)."""
    from models.training.train import train
    from models.training.train_config import config_from_args

    best = train(config_from_args(args))
    _print_json(best)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on an HC18-layout folder (see models.evaluation)."""
    from models.evaluation import run_from_args

    return run_from_args(args)


def cmd_eval_gate(args: argparse.Namespace) -> int:
    """Validate the plane decision on held-out images through the measuring path, the gate alone and with SonoNet-16
    (see models.evaluation.gate_eval)."""
    from models.evaluation.gate_eval import evaluate_gate, format_report, held_out_items
    from models.plane.head_plane import load_gate
    from models.segmentation.backends import make_forward
    from models.segmentation.weights import load_weights

    items = held_out_items(Path(args.data))
    if not any(i.source == "hc18" for i in items):
        raise FileNotFoundError(f"no HC18 validation heads under {args.data} (expected hc18/, us-negatives/, "
                                "other-heads/)")
    settings = get_settings()
    backend = args.backend or settings.backend.value
    gate = load_gate(args.gate, "cpu", backend)
    if args.threshold is not None:
        gate = gate.with_threshold(args.threshold)
    model = load_weights(settings.weights)
    forward = make_forward(model, backend, precision=args.precision or settings.precision.value)
    classifier_file = args.classifier or settings.plane_classifier
    classifier = None
    if classifier_file:
        from models.plane.sononet import load_plane_classifier

        classifier = load_plane_classifier(classifier_file, backend,
                                           precision=settings.plane_classifier_precision.value)
    report = evaluate_gate(gate, model, items, net=forward, classifier=classifier)
    report["backend"], report["precision"] = forward.backend.value, forward.precision.value
    report["classifier_precision"] = classifier.precision.value if classifier is not None else None
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return 0
