"""Enqueueing at archive scale: job rows in bulk per chunk, messages over one connection, paths streamed."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from db import Job, session_scope, upgrade
from db.repository import create_jobs, mark_jobs_queued, set_job_status
from db.tables import JobStatus
from worker.core.settings import Settings, get_settings
from worker.queue.enqueue import enqueue_files


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}.dcm" for i in range(n)]
    for p in paths:
        p.write_bytes(b"")  # enqueueing reads paths only
    return paths


def _queued_bodies(url: str, queue: str) -> list:
    raw = redis.Redis.from_url(url).lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in reversed(raw)]  # oldest first


@pytest.fixture()
def settings(fetalhc_env: pytest.MonkeyPatch, redis_url: str) -> Settings:
    fetalhc_env.setenv("FETALHC_BROKER_URL", redis_url)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"])
def test_create_jobs_returns_ids_in_order_and_marks_only_received(url_fixture: str,
                                                                  request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(url_fixture)
    upgrade(url)
    with session_scope(url) as session:
        ids = create_jobs(session, [(f"/a/{i}.dcm", 70.0 if i == 1 else None) for i in range(7)], "cli", "live")
    with session_scope(url) as session:
        set_job_status(session, ids[2], JobStatus.RUNNING)  # a fast worker took it already
    with session_scope(url) as session:
        assert mark_jobs_queued(session, ids[:5]) == 4
    with session_scope(url) as session:
        jobs = {j.id: j for j in session.scalars(select(Job))}
    assert [jobs[i].path for i in ids] == [f"/a/{i}.dcm" for i in range(7)]
    assert jobs[ids[1]].ga_days_given == 70.0 and jobs[ids[0]].source == "cli" and jobs[ids[0]].queue == "live"
    assert [jobs[i].status for i in ids] == ["queued", "queued", "running", "queued", "queued", "received",
                                             "received"]
    assert jobs[ids[0]].queued_at is not None and jobs[ids[5]].queued_at is None


def test_chunks_keep_order_and_send_every_message(settings: Settings, tmp_path: Path) -> None:
    queue = f"bulk-{uuid.uuid4().hex[:8]}"
    paths = _files(tmp_path / "a", 7)
    summary = enqueue_files(settings, paths, queue=queue, chunk=3)
    assert (summary.queued, summary.deferred, len(summary.job_ids)) == (7, 0, 7)
    bodies = _queued_bodies(settings.broker_url, queue)
    assert [(b[0], b[1]) for b in bodies] == list(zip(summary.job_ids, [str(p.resolve()) for p in paths]))
    with session_scope(settings.database_url) as session:
        assert set(session.scalars(select(Job.status))) == {"queued"}


def test_batches_stay_whole_across_chunks(settings: Settings, tmp_path: Path) -> None:
    queue = f"bulk-{uuid.uuid4().hex[:8]}"
    summary = enqueue_files(settings, _files(tmp_path / "a", 9), queue=queue, batch=2, chunk=5)  # chunks of 4
    groups = [[item[0] for item in body[0]] for body in _queued_bodies(settings.broker_url, queue)]
    assert groups == [summary.job_ids[i:i + 2] for i in range(0, 9, 2)]
    assert summary.queued == 9


def test_paths_are_streamed_a_chunk_at_a_time(settings: Settings, tmp_path: Path) -> None:
    """The archive's paths are never listed whole: each chunk is recorded before the next is read."""
    queue = f"bulk-{uuid.uuid4().hex[:8]}"
    paths = _files(tmp_path / "a", 10)
    recorded_when_read: list[int] = []

    def stream() -> Iterator[Path]:
        upgrade(settings.database_url)
        for p in paths:
            with session_scope(settings.database_url) as session:
                recorded_when_read.append(session.scalar(select(func.count()).select_from(Job)))
            yield p

    assert enqueue_files(settings, stream(), queue=queue, chunk=4).queued == 10
    assert recorded_when_read == [0] * 4 + [4] * 4 + [8] * 2


def test_a_broker_outage_leaves_every_job_received_for_the_sweeper(fetalhc_env: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    settings = Settings().replace(broker_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    summary = enqueue_files(settings, _files(tmp_path / "a", 5), chunk=2)
    assert (summary.queued, summary.deferred) == (0, 5)
    with session_scope(settings.database_url) as session:
        assert sorted(session.scalars(select(Job.status))) == ["received"] * 5
