"""What needs no token: the web page and the health check."""

from __future__ import annotations

import logging
from typing import Any

from db import get_engine
from models.plane.sononet import plane_classifier_problem
from worker.api.app import ApiApp

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)


def health(app: ApiApp) -> tuple[dict[str, Any], int]:
    """200 when the database answers, the weights (and head-plane gate) files exist and the plane classifier, when
    ``FETALHC_PLANE_CLASSIFIER`` names one, is SonoNet-16's (``plane_classifier``: present | off | invalid); else 503
    saying which."""
    try:
        with get_engine(app.settings.database_url).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "unreachable"
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        database = "unreachable"
    model_file = "present" if app.weights_path.is_file() else "missing"
    gate = app.gate_path
    gate_file = "off" if gate is None else ("present" if gate.is_file() else "missing")
    classifier = app.settings.plane_classifier
    plane_classifier = "off" if classifier is None else ("invalid" if plane_classifier_problem(classifier) else "present")
    ok = database == "ok" and model_file == "present" and gate_file != "missing" and plane_classifier != "invalid"
    return ({"status": "ok" if ok else "unavailable", "database": database, "model_file": model_file,
             "gate_file": gate_file, "plane_classifier": plane_classifier, "model_loaded": app.model_loaded},
            200 if ok else 503)
