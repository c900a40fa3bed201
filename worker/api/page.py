"""The web page of ``fetalhc serve``: try one scan, see the overlay and growth facts, list the latest results;
review flagged measurements (``#review``) and a patient's rows over the growth chart (``#patient``).

One self-contained HTML document (inline CSS and JavaScript, no external resources: hospital
networks often have no internet), assembled from the package data files ``worker/api/static/``
(``body.html``, ``page.css`` and ``review.css``, ``page.js`` and ``review.js``). Its scripts talk to the JSON API
with ``fetch``, sending the API token typed into the page (kept in ``sessionStorage``), and build every piece of
text with ``textContent``, never ``innerHTML``, so values from the database cannot inject markup; a stored scan's
image is fetched with the token and shown from a ``blob:`` URL. ``PAGE_HEADERS`` carries a
Content-Security-Policy that allows exactly these two scripts and the style (by hash), images from ``data:`` and
``blob:`` URLs and requests to the same origin.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files


def _static(name: str) -> str:
    return files("worker").joinpath("api", "static", name).read_text(encoding="utf-8")  # not importing worker.api


_CSS = _static("page.css") + _static("review.css")
_JS = _static("page.js")
_REVIEW_JS = _static("review.js")  # the Review and Patient views (a second script: it uses page.js's helpers)
_BODY = _static("body.html")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE_HTML = ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             "<title>fetalhc</title>\n<style>" + _CSS + "</style>\n</head>\n<body>" + _BODY
             + "<script>" + _JS + "</script>\n<script>" + _REVIEW_JS + "</script>\n</body>\n</html>\n")

PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(_JS)} {_sha256(_REVIEW_JS)}; style-src {_sha256(_CSS)}; "
        "img-src data: blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
