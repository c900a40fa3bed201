"""The review API on the real server (SQLite; one PostgreSQL test): named tokens, the worklist, decisions with their
clear refusals, effective values in results and CSV, the measured frame's image."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from db import Measurement, Review, session_scope
from models.geometry.ellipse import ramanujan_perimeter
from tests.worker.api.test_api import PNG_MAGIC, call, call_json, running
from tests.worker.review_support import REGION, SPACING_MM, store_flagged_scans
from worker.core.settings import get_settings
from worker.core.tokens import add_token

SHARED = "shared-t0ken"


@pytest.fixture()
def reviewing(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A server's settings with the shared token and a named-token file holding alice and bob."""
    tokens = tmp_path / "tokens"
    fetalhc_env.setenv("FETALHC_API_TOKEN", SHARED)
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(tokens))
    get_settings.cache_clear()
    return {"alice": add_token(tokens, "alice"), "bob": add_token(tokens, "bob"), "file": str(tokens)}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def review(url: str, ident: int, token: str, body: object, **headers: str) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call_json(f"{url}/api/measurements/{ident}/review", "POST", data,
                     {"Content-Type": "application/json", **auth(token), **headers})


def test_named_tokens_work_everywhere_the_shared_one_does(reviewing: dict[str, str], tmp_path: Path) -> None:
    store_flagged_scans(get_settings().database_url, tmp_path / "scans", 1)
    with running() as url:
        for token in (SHARED, reviewing["alice"]):
            for path in ("/api/results", "/api/stats", "/api/review", "/api/results.csv"):
                status, _, _ = call(url + path, headers=auth(token))
                assert status == 200, (path, token)
        assert call(url + "/api/results", headers=auth("not-a-token"))[0] == 401
        assert call(url + "/api/results")[0] == 401
        assert call_json(url + "/api/whoami", headers=auth(reviewing["alice"]))[1] == {
            "name": "alice", "can_review": True, "token_required": True}
        assert call_json(url + "/api/whoami", headers=auth(SHARED))[1] == {
            "name": None, "can_review": False, "token_required": True}
        # revoked: refused from the next request on, without a restart
        from worker.core.tokens import revoke_token

        assert revoke_token(Path(reviewing["file"]), "alice")
        assert call(url + "/api/results", headers=auth(reviewing["alice"]))[0] == 401
        assert call(url + "/api/results", headers=auth(reviewing["bob"]))[0] == 200


def test_a_tokens_file_alone_requires_a_token(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(tmp_path / "tokens"))
    token = add_token(tmp_path / "tokens", "carol")
    with running() as url:
        assert call(url + "/api/stats")[0] == 401
        assert call(url + "/api/stats", headers=auth(token))[0] == 200


def test_worklist_oldest_first_by_reason_and_not_head_on_request(reviewing: dict[str, str], tmp_path: Path) -> None:
    url_db = get_settings().database_url
    flagged = store_flagged_scans(url_db, tmp_path / "a", 3)
    cut = store_flagged_scans(url_db, tmp_path / "b", 1, flags="cut_by_border,low_confidence", first_seed=10)
    gate = store_flagged_scans(url_db, tmp_path / "c", 1, status="not_head", first_seed=20)
    with running() as url:
        status, rows = call_json(url + "/api/review", headers=auth(SHARED))
        assert status == 200 and [r["id"] for r in rows] == [s.id for s in (*flagged, *cut)]
        assert rows[0]["effective_status"] == "needs_review" and rows[0]["confirmed"] is False
        assert [r["id"] for r in call_json(url + "/api/review?reason=cut_by_border", headers=auth(SHARED))[1]] == [
            cut[0].id]
        assert [r["id"] for r in call_json(url + "/api/review?status=not_head", headers=auth(SHARED))[1]] == [
            gate[0].id]
        assert call_json(url + "/api/review?status=failed", headers=auth(SHARED))[0] == 400
        assert call_json(url + "/api/review?reason=a%25b", headers=auth(SHARED))[0] == 400
        assert review(url, flagged[0].id, reviewing["alice"], {"decision": "accepted"})[0] == 200
        assert [r["id"] for r in call_json(url + "/api/review", headers=auth(SHARED))[1]] == [
            s.id for s in (*flagged[1:], *cut)]
        assert len(call_json(url + "/api/review?include_reviewed=1", headers=auth(SHARED))[1]) == 4


def test_decisions_are_kept_with_the_name_and_results_show_the_effective_values(
        reviewing: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scans = store_flagged_scans(get_settings().database_url, tmp_path / "scans", 4, hc_error_mm=-12.0)
    a, b, c, d = scans
    with running() as url, caplog.at_level(logging.INFO):
        status, body = review(url, a.id, reviewing["alice"], {"decision": "accepted", "note": "fine"})
        assert status == 200
        m = body["measurement"]
        assert (m["review_decision"], m["reviewed_by"], m["effective_status"], m["confirmed"]) == (
            "accepted", "alice", "reviewed", True)
        assert m["effective_hc_mm"] == m["hc_mm"] and body["review"]["note"] == "fine"

        status, body = review(url, b.id, reviewing["bob"], {"decision": "rejected_not_head"})
        assert status == 200 and body["measurement"]["effective_status"] == "rejected"
        assert body["measurement"]["effective_hc_mm"] is None and body["measurement"]["hc_mm"] is not None

        e = c.ellipse_mm  # the true ellipse: the stored one is 12 mm short
        corrected = {"decision": "corrected", "center_x_mm": e.cx, "center_y_mm": e.cy,
                     "semi_axis_a_mm": e.a / (1 - 12.0 / c.hc_mm), "semi_axis_b_mm": e.b / (1 - 12.0 / c.hc_mm),
                     "angle_rad": e.angle}
        status, body = review(url, c.id, reviewing["alice"], corrected)
        assert status == 200, body
        m = body["measurement"]
        expected = ramanujan_perimeter(corrected["semi_axis_a_mm"], corrected["semi_axis_b_mm"])
        assert m["effective_hc_mm"] == pytest.approx(expected, abs=0.01)
        assert m["effective_hc_mm"] == pytest.approx(c.hc_mm, abs=0.3) and m["hc_mm"] == pytest.approx(c.hc_mm - 12, abs=0.3)
        assert m["effective_bpd_mm"] == pytest.approx(2 * corrected["semi_axis_b_mm"], abs=0.01)
        assert m["effective_hc_centile"] > m["hc_centile"]  # the same GA, a bigger head
        assert m["reviewed_ga_estimate_days"] > m["ga_estimate_days"]

        status, body = review(url, d.id, reviewing["bob"], {"decision": "corrected", "hc_mm": 150.0})
        assert status == 200 and body["measurement"]["effective_hc_mm"] == 150.0
        k = 150.0 / d.ellipse_mm.perimeter  # the model's ellipse scaled to the HC typed
        assert body["review"]["semi_axis_a_mm"] == pytest.approx(d.ellipse_mm.a * k, rel=1e-6)
        assert body["measurement"]["effective_ofd_mm"] == pytest.approx(2 * d.ellipse_mm.a * k, abs=0.01)

        # a second decision about the same row: both kept, the latest counts
        assert review(url, a.id, reviewing["bob"], {"decision": "rejected_unusable"})[0] == 200
        status, detail = call_json(f"{url}/api/measurements/{a.id}", headers=auth(SHARED))
        assert status == 200
        assert [(r["reviewer"], r["decision"]) for r in detail["reviews"]] == [
            ("alice", "accepted"), ("bob", "rejected_unusable")]
        assert detail["measurement"]["effective_status"] == "rejected"

        results = {r["id"]: r for r in call_json(url + "/api/results", headers=auth(SHARED))[1]}
        assert results[c.id]["effective_hc_mm"] == pytest.approx(c.hc_mm, abs=0.3) and results[c.id]["confirmed"]
        _, _, data = call(url + "/api/results.csv", headers=auth(SHARED))
        by_id = {int(r["id"]): r for r in csv.DictReader(io.StringIO(data.decode()))}
        assert by_id[c.id]["review_decision"] == "corrected" and by_id[c.id]["reviewed_by"] == "alice"
        assert float(by_id[c.id]["effective_hc_mm"]) == pytest.approx(c.hc_mm, abs=0.3)
        assert by_id[c.id]["confirmed"] == "True" and by_id[a.id]["effective_status"] == "rejected"
        assert b.id not in by_id  # rejected as no head plane: out of the default results, like the gate's not_head
    with session_scope(get_settings().database_url) as session:
        assert [(r.measurement_id, r.reviewer, r.decision) for r in session.scalars(select(Review).order_by(Review.id))
                ] == [(a.id, "alice", "accepted"), (b.id, "bob", "rejected_not_head"), (c.id, "alice", "corrected"),
                      (d.id, "bob", "corrected"), (a.id, "bob", "rejected_unusable")]
        assert all(r.decided_at is not None for r in session.scalars(select(Review)))
        stored = session.get(Measurement, c.id)
        assert stored is not None and stored.hc_mm == pytest.approx(c.hc_mm - 12, abs=0.3)  # the model's value stays
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "reviewed by alice: corrected" in logged
    assert reviewing["alice"] not in logged and reviewing["bob"] not in logged


def test_reviews_are_refused_with_clear_errors(reviewing: dict[str, str], tmp_path: Path) -> None:
    (scan,) = store_flagged_scans(get_settings().database_url, tmp_path / "scans", 1)
    e = scan.ellipse_mm
    ellipse = {"center_x_mm": e.cx, "center_y_mm": e.cy, "semi_axis_a_mm": e.a, "semi_axis_b_mm": e.b,
               "angle_rad": e.angle}
    with running() as url:
        status, body = review(url, scan.id, SHARED, {"decision": "accepted"})
        assert (status, body["reason"]) == (403, "reviewer_required") and "named token" in body["message"]
        status, body = call_json(f"{url}/api/measurements/{scan.id}/review", "POST", b'{"decision":"accepted"}',
                                 {"Content-Type": "application/json"})
        assert status == 401
        status, body = review(url, 999999, reviewing["alice"], {"decision": "accepted"})
        assert (status, body["reason"]) == (404, "not_found") and "999999" in body["message"]
        cases = [
            ({"decision": "corrected", **ellipse, "semi_axis_b_mm": 0.0}, "insane_value", "semi-axes"),
            ({"decision": "corrected", **ellipse, "semi_axis_a_mm": -4.0}, "insane_value", "semi-axes"),
            ({"decision": "corrected", "hc_mm": 900.0}, "insane_value", "900.0 mm"),
            ({"decision": "corrected", "hc_mm": 20.0}, "insane_value", "outside 50-450"),
            ({"decision": "corrected", **ellipse, "semi_axis_a_mm": 180.0, "semi_axis_b_mm": 170.0}, "insane_value",
             "outside 50-450"),
            ({"decision": "corrected", "center_x_mm": 1.0}, "invalid_review", "missing"),
            ({"decision": "corrected"}, "invalid_review", "either the ellipse"),
            ({"decision": "corrected", **ellipse, "hc_mm": 170.0}, "invalid_review", "not both"),
            ({"decision": "accepted", "hc_mm": 170.0}, "invalid_review", "only a 'corrected'"),
            ({"decision": "maybe"}, "invalid_review", "choose one of"),
            ({"decision": "corrected", "hc_mm": "big"}, "invalid_review", "hc_mm"),
            ({"decision": "accepted", "reviewer": "mallory"}, "invalid_review", "reviewer"),
            ({"decision": "accepted", "note": "x" * 2001}, "invalid_review", "at most 2000"),
        ]
        for body_in, reason, words in cases:
            status, body = review(url, scan.id, reviewing["alice"], body_in)
            assert (status, body["reason"]) == (422, reason), (body_in, body)
            assert words in body["message"], (body_in, body)
        assert review(url, scan.id, reviewing["alice"], b"not json")[0] == 400
        status, _, _ = call(f"{url}/api/measurements/{scan.id}/review", "POST", b'{"decision":"accepted"}',
                            {"Content-Type": "text/plain", **auth(reviewing["alice"])})
        assert status == 415
        status, body = review(url, scan.id, reviewing["alice"], {"decision": "accepted"},
                              Origin="http://evil.example")
        assert (status, body["reason"]) == (403, "foreign_origin")
    with session_scope(get_settings().database_url) as session:
        assert session.scalars(select(Review)).all() == []  # nothing refused was recorded
        stored = session.get(Measurement, scan.id)
        assert stored is not None and stored.review_decision is None


def test_the_image_is_the_measured_frame_with_the_ellipse_never_cached(reviewing: dict[str, str],
                                                                      tmp_path: Path) -> None:
    scans = store_flagged_scans(get_settings().database_url, tmp_path / "scans", 2)
    with running() as url:
        status, headers, data = call(f"{url}/api/measurements/{scans[0].id}/image.png", headers=auth(SHARED))
        assert status == 200 and data.startswith(PNG_MAGIC) and headers["Content-Type"] == "image/png"
        assert "no-store" in headers["Cache-Control"]
        drawn = Image.open(io.BytesIO(data)).convert("RGB")
        # the region the network saw, not the whole frame
        assert drawn.size == (REGION[2] - REGION[0] + 1, REGION[3] - REGION[1] + 1)
        e = scans[0].ellipse_mm
        import math

        x = (e.cx + e.a * math.cos(e.angle)) / SPACING_MM  # the end of the major axis lies on the drawn outline
        y = (e.cy + e.a * math.sin(e.angle)) / SPACING_MM
        near = [drawn.getpixel((round(x) + dx, round(y) + dy)) for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)]
        assert any(r > 200 and g < 120 and b_ < 100 for r, g, b_ in near), near
        status, _, plain = call(f"{url}/api/measurements/{scans[0].id}/image.png?overlay=0&width=100",
                                headers=auth(SHARED))
        assert status == 200 and Image.open(io.BytesIO(plain)).size[0] == 100
        assert call(f"{url}/api/measurements/{scans[0].id}/image.png")[0] == 401
        assert call(f"{url}/api/measurements/424242/image.png", headers=auth(SHARED))[0] == 404
        assert call(f"{url}/api/measurements/{scans[0].id}/image.png?width=5", headers=auth(SHARED))[0] == 400
        scans[1].path.unlink()
        status, body = call_json(f"{url}/api/measurements/{scans[1].id}/image.png", headers=auth(SHARED))
        assert (status, body["reason"]) == (410, "scan_gone") and "no longer there" in body["message"]


def test_reviews_on_postgresql(fetalhc_env: pytest.MonkeyPatch, pg_url: str, tmp_path: Path) -> None:
    fetalhc_env.setenv("FETALHC_DATABASE_URL", pg_url)
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(tmp_path / "tokens"))
    token = add_token(tmp_path / "tokens", "dana")
    scans = store_flagged_scans(pg_url, tmp_path / "scans", 2)
    with running() as url:
        assert review(url, scans[0].id, token, {"decision": "corrected", "hc_mm": 140.0})[0] == 200
        rows = call_json(url + "/api/review", headers=auth(token))[1]
        assert [r["id"] for r in rows] == [scans[1].id]
    with session_scope(pg_url) as session:
        stored = session.get(Measurement, scans[0].id)
        assert stored is not None and (stored.reviewed_by, stored.reviewed_hc_mm) == ("dana", 140.0)
        assert stored.reviewed_at is not None and stored.reviewed_at.tzinfo is not None
        from db import confirmed_rows

        assert [(c.measurement.id, c.review.hc_mm) for c in confirmed_rows(session)] == [(scans[0].id, 140.0)]


def _plane_verdicts_decide_the_default_results(token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A not_head row corrected into a head joins the default results, CSV, `fetalhc results` and stats; a measured
    row rejected as no head plane leaves them; the model's own values stay in both rows."""
    from worker.cli import main

    url_db = get_settings().database_url
    kept, rejected = store_flagged_scans(url_db, tmp_path / "m", 2, status="measured", flags="")
    corrected, confirmed, unusable = store_flagged_scans(url_db, tmp_path / "g", 3, status="not_head", first_seed=20)
    e = corrected.ellipse_mm
    with running() as url:
        assert [r["id"] for r in call_json(url + "/api/results", headers=auth(token))[1]] == [kept.id, rejected.id]
        fix = {"decision": "corrected", "center_x_mm": e.cx, "center_y_mm": e.cy, "semi_axis_a_mm": e.a,
               "semi_axis_b_mm": e.b, "angle_rad": e.angle}
        for scan, body in ((corrected, fix), (confirmed, {"decision": "accepted"}),
                           (unusable, {"decision": "rejected_unusable"}),
                           (rejected, {"decision": "rejected_not_head"})):
            assert review(url, scan.id, token, body)[0] == 200

        # the default listing: heads in effect (a person's plane verdict wins over the gate's and the model's)
        expected = {kept.id, corrected.id, unusable.id}
        rows = {r["id"]: r for r in call_json(url + "/api/results", headers=auth(token))[1]}
        assert set(rows) == expected
        row = rows[corrected.id]
        assert (row["status"], row["effective_status"], row["confirmed"]) == ("not_head", "reviewed", True)
        assert row["hc_mm"] is None and row["effective_hc_mm"] == pytest.approx(e.perimeter, abs=0.01)
        assert (rows[unusable.id]["effective_status"], rows[unusable.id]["effective_hc_mm"]) == ("rejected", None)
        _, _, data = call(url + "/api/results.csv", headers=auth(token))
        assert {int(r["id"]) for r in csv.DictReader(io.StringIO(data.decode()))} == expected
        # asked for by the row's own status: every row of it, the reviewed ones included
        assert [r["id"] for r in call_json(url + "/api/results?status=not_head", headers=auth(token))[1]] == [
            corrected.id, confirmed.id, unusable.id]
        by_status = call_json(url + "/api/results?status=measured", headers=auth(token))[1]
        assert [(r["id"], r["effective_status"]) for r in by_status] == [(kept.id, "measured"), (rejected.id, "rejected")]

        stats = call_json(url + "/api/stats", headers=auth(token))[1]
        assert (stats["measurements"]["measured"], stats["measurements"]["not_head"]) == (2, 3)
        assert stats["effective"] == {"measured": 1, "needs_review": 0, "not_head": 1, "failed": 0, "reviewed": 1,
                                      "rejected": 2}
    with session_scope(url_db) as session:
        model_rejected = session.get(Measurement, rejected.id)
        assert model_rejected is not None and model_rejected.status == "measured" and model_rejected.hc_mm is not None
    capsys.readouterr()
    assert main(["results", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["id"] for r in printed} == expected
    assert main(["results"]) == 0
    table = capsys.readouterr().out
    assert "effective_status" in table.splitlines()[0] and "3 rows" in table


def test_a_persons_plane_verdict_decides_the_default_results(reviewing: dict[str, str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _plane_verdicts_decide_the_default_results(reviewing["alice"], tmp_path, capsys)


def test_a_persons_plane_verdict_decides_the_default_results_on_postgresql(
        fetalhc_env: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetalhc_env.setenv("FETALHC_DATABASE_URL", pg_url)
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(tmp_path / "tokens"))
    get_settings.cache_clear()
    _plane_verdicts_decide_the_default_results(add_token(tmp_path / "tokens", "erin"), tmp_path, capsys)
