"""The routing table: which handler answers each (method, path), and which need the token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.api.app import ApiApp
from worker.api.measure import handle_measure
from worker.api.messages import ApiError, Request, Response
from worker.api.pages import handle_healthz, handle_page
from worker.api.results import handle_job, handle_results, handle_results_csv, handle_stats

Handler = Callable[[ApiApp, Request], Response]


@dataclass(frozen=True)
class Route:
    """A handler and whether it needs the token (when one is configured)."""

    handler: Handler
    private: bool = True


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route(handle_page, private=False),
    ("GET", "/index.html"): Route(handle_page, private=False),
    ("GET", "/healthz"): Route(handle_healthz, private=False),
    ("GET", "/api/results"): Route(handle_results),
    ("GET", "/api/results.csv"): Route(handle_results_csv),
    ("GET", "/api/stats"): Route(handle_stats),
    ("POST", "/api/measure"): Route(handle_measure),
}
PREFIX_ROUTES: dict[tuple[str, str], Route] = {("GET", "/api/jobs/"): Route(handle_job)}


def find_route(method: str, path: str) -> Route:
    """The route of (method, path); ApiError 404 (unknown path) or 405 (known path, other method)."""
    route = ROUTES.get((method, path))
    if route is None:
        route = next((r for (m, prefix), r in PREFIX_ROUTES.items() if m == method and path.startswith(prefix)), None)
    if route is not None:
        return route
    known = [m for (m, p) in ROUTES if p == path] + [m for (m, p) in PREFIX_ROUTES if path.startswith(p)]
    if known:
        raise ApiError(405, "method_not_allowed", f"{path} answers {', '.join(sorted(set(known)))}",
                       {"allow": sorted(set(known))})
    raise ApiError(404, "not_found", f"there is nothing at {path[:200]}")
