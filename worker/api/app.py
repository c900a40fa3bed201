"""``ApiApp``: the state every request shares (settings, tokens, lazily loaded model, database schema)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from db import SchemaError, upgrade
from models.errors import WeightsError
from models.segmentation.weights import SHIPPED_WEIGHTS, LoadedModel
from worker.api.messages import ApiError
from worker.core.cpus import available_cpus
from worker.core.settings import Settings
from worker.core.tokens import TokenBook
from worker.measure.pipeline import PipelineContext, load_context

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)

MAX_BODY_BYTES = 64 * 1024 * 1024  # an upload above this is answered 413 without being read


class ApiApp:
    """What every request shares: settings, the token, the lazily loaded model and the measuring lock.

    The model is loaded on the first measurement (``load_context``, cached) and one forward pass
    runs at a time: on a CPU, parallel passes only slow each other down.
    """

    def __init__(self, settings: Settings, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.settings = settings
        self.token = settings.api_token.get_secret_value() if settings.api_token else None
        self.tokens = TokenBook(settings.api_tokens_file)  # named tokens (reviewers), re-read when the file changes
        self.max_body_bytes = max_body_bytes
        self.measure_lock = threading.Lock()
        self._context: PipelineContext | None = None
        self._context_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @property
    def auth_required(self) -> bool:
        """True when requests must carry a token: ``FETALHC_API_TOKEN`` or ``FETALHC_API_TOKENS_FILE`` is set."""
        return bool(self.token) or self.tokens.configured

    @property
    def weights_path(self) -> Path:
        """The weights file the model is (or will be) loaded from."""
        return Path(self.settings.weights) if self.settings.weights else SHIPPED_WEIGHTS

    @property
    def gate_path(self) -> Path | None:
        """The head-plane gate file measuring needs (None: ``FETALHC_HEAD_PLANE_GATE=off``)."""
        from models.plane.head_plane import SHIPPED_GATE

        gate = self.settings.head_plane_gate
        return None if gate == "off" else (SHIPPED_GATE if gate == "on" else Path(gate))

    @property
    def model_loaded(self) -> bool:
        return self._context is not None

    @property
    def model(self) -> LoadedModel | None:
        """The loaded model, None before the first measurement."""
        return self._context.model if self._context else None

    def context(self) -> PipelineContext:
        """The pipeline context, loading the model on first use (once per process)."""
        with self._context_lock:
            if self._context is None:
                import torch

                torch.set_num_threads(self.settings.torch_threads or available_cpus())  # the pod's CPUs, not the node's
                started = time.perf_counter()
                try:
                    self._context = load_context(self.settings)
                except WeightsError as exc:
                    log.error("model cannot be loaded: %s", exc)
                    raise ApiError(503, "model_unavailable", f"the model cannot be loaded: {exc}") from None
                log.info("model %s loaded on %s in %.1f s", self._context.model.model_version[:12],
                         self._context.device, time.perf_counter() - started)
            return self._context

    def ensure_schema(self) -> None:
        """Create the tables on first database use (so the server starts while the database is down)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                try:
                    upgrade(self.settings.database_url)
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("database unavailable (%s)", type(exc).__name__)
                    raise ApiError(503, "database_unavailable",
                                   "the results database cannot be reached; try again later") from None
                except SchemaError as exc:
                    log.error("database schema refused: %s", exc)
                    raise ApiError(503, "schema_mismatch", f"the results database needs an administrator: {exc}"
                                   ) from None
                self._schema_ready = True
