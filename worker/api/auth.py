"""Who is calling: the shared ``FETALHC_API_TOKEN`` (no name) or a named token of ``FETALHC_API_TOKENS_FILE``.

Either token opens every ``/api/`` endpoint; only a named one may review (a decision needs a name). Tokens
are compared in constant time (``hmac.compare_digest``; every named entry is compared). Logs name the
reviewer at most, never a token or its hash.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from worker.api.app import ApiApp
from worker.api.messages import ApiError
from worker.core.tokens import TokenFileError

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: ``name`` of a named token (a reviewer), None for the shared token or no token."""

    name: str | None = None


def authenticate(api: ApiApp, authorization: str | None) -> Caller:
    """The caller of a request with this ``Authorization`` header; 401 without a valid token where one is needed.

    Without any token configured every caller is let in, unnamed (this machine only: see ``guards``).
    """
    scheme, _, value = (authorization or "").partition(" ")
    presented = value.strip() if scheme.lower() == "bearer" else ""
    if presented and api.tokens.configured:
        try:
            name = api.tokens.name_of(presented)
        except (TokenFileError, OSError) as exc:
            log.error("FETALHC_API_TOKENS_FILE cannot be read: %s", type(exc).__name__)
            raise ApiError(503, "tokens_file_unreadable", "the named-token file cannot be read; an administrator "
                           "must fix FETALHC_API_TOKENS_FILE (see the server log)") from None
        if name is not None:
            return Caller(name)
    shared = bool(api.token) and hmac.compare_digest(presented.encode(), (api.token or "").encode())
    if shared or not api.auth_required:
        return Caller(None)
    raise ApiError(401, "unauthorized", "send an API token: Authorization: Bearer <token> (FETALHC_API_TOKEN, or "
                   "a named token from fetalhc token add NAME)")


def require_reviewer(caller: Caller) -> str:
    """The reviewer's name; 403 for a caller without one (the shared token, or no token at all)."""
    if caller.name is None:
        raise ApiError(403, "reviewer_required", "a review needs a named token: ask an administrator for one "
                       "(fetalhc token add NAME) and send it as Authorization: Bearer <token>; the shared "
                       "FETALHC_API_TOKEN has no name and cannot review")
    return caller.name
