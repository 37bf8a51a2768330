"""Background jobs through the SDK: each holds one unit of the ``runs`` quota while it runs; a failed
job gives it back; progress can be watched."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.errors import InvalidInput, NotFound, QuotaExceeded
from selfserve.settings import get_settings
from tests.support import Platform, upload_table, wait_job

P = "sales"
SLOW = """
import time
import polars as pl

def transform():
    time.sleep({seconds})
    return pl.DataFrame({{"x": [1]}})
"""


def runs_used(client: Client) -> float:
    return next((i.amount for i in client.quotas.usage(P).items if i.resource == "runs"), 0.0)


@pytest.fixture
def owner(platform: Platform) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    platform.admin().quotas.set(P, {"runs": 1})
    return alice


def test_a_second_concurrent_job_is_refused_by_the_runs_quota(owner: Client) -> None:
    first = owner.datasets.transform(P, "slow", polars=SLOW.format(seconds=3), wait=False)
    assert first.status in ("queued", "running")
    assert runs_used(owner) == 1
    with pytest.raises(QuotaExceeded) as e:
        owner.datasets.transform(P, "other", sql="SELECT 1 AS x", wait=False)
    assert "runs quota" in e.value.message and P in e.value.message
    assert e.value.detail == {"resource": "runs", "used": 1.0, "requested": 1, "limit": 1.0}
    assert [j.id for j in owner.jobs.list(P)] == [first.id]  # the refused job left no trace

    assert owner.jobs.wait(P, first.id, timeout=60).status == "succeeded"
    assert runs_used(owner) == 0
    assert owner.datasets.transform(P, "other", sql="SELECT 1 AS x").status == "succeeded"


def test_a_failed_job_releases_its_run(owner: Client) -> None:
    failed = owner.datasets.transform(
        P, "broken", polars="def transform():\n    raise ValueError('nope')\n", wait=False
    )
    ended = wait_job(owner, P, failed.id)
    assert ended.status == "failed" and "ValueError: nope" in (ended.error or "")
    assert runs_used(owner) == 0
    assert owner.datasets.transform(P, "fine", sql="SELECT 1 AS x").status == "succeeded"
    assert runs_used(owner) == 0


def test_a_job_whose_work_fails_unexpectedly_releases_its_run(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, P, "orders", pa.table({"id": [1]}), tmp_path)
    job = owner.datasets.transform(
        P, "x", polars="def transform(orders):\n    return orders\n", inputs={"orders": "orders@7"}, wait=False
    )
    with pytest.raises(NotFound, match="version 7"):
        owner.jobs.wait(P, job.id, timeout=60)
    assert runs_used(owner) == 0


def test_job_show_list_and_isolation(platform: Platform, owner: Client) -> None:
    job = owner.datasets.transform(P, "one", sql="SELECT 1 AS x")
    shown = owner.jobs.get(P, job.id)
    assert (shown.kind, shown.status, shown.created_by) == ("transform", "succeeded", "alice")
    assert shown.params["to"] == "one" and shown.params["sql"] == "SELECT 1 AS x"
    assert shown.started_at and shown.finished_at and shown.finished_at >= shown.started_at
    assert [j.id for j in owner.jobs.list(P)] == [job.id]
    bob = platform.user("bob")
    bob.projects.create("other")
    with pytest.raises(NotFound):
        bob.jobs.get("other", job.id)  # a job id of another project is unknown here
    with pytest.raises(NotFound):
        bob.jobs.get(P, job.id)
    with pytest.raises(NotFound):
        owner.jobs.get(P, 424242)


def test_progress_of_a_running_ingest_is_visible(
    platform: Platform, owner: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    with sqlite3.connect(root / "shop.db") as conn:
        conn.execute("CREATE TABLE events (id INTEGER, kind TEXT)")
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, "click") for i in range(120)])
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(root)]))
    get_settings.cache_clear()
    owner.sources.add(P, "shop", "sqlite", {"path": str(root / "shop.db")})

    # 40 rows a second, in chunks of 40: about three seconds, with progress after each chunk.
    job = owner.datasets.ingest(P, "shop", "events", table="events", max_rows_per_second=40, wait=False)
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = owner.jobs.get(P, job.id)
        seen.append((now.status, int(now.progress.get("rows_read", 0))))
        if now.status in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert seen[-1] == ("succeeded", 120)
    partial = {rows for status, rows in seen if status == "running" and 0 < rows < 120}
    assert partial, f"no progress seen while running: {seen}"
    ended = owner.jobs.get(P, job.id)
    assert ended.result == {"dataset": "events", "version": 0, "rows": 120}
    assert owner.datasets.get(P, "events").rows == 120
    assert runs_used(owner) == 0


def test_an_ingest_of_an_unknown_source_is_refused_before_any_job(owner: Client) -> None:
    with pytest.raises(NotFound, match="source 'nope'"):
        owner.datasets.ingest(P, "nope", "events", table="events", wait=False)
    with pytest.raises(InvalidInput):
        owner.datasets.ingest(P, "nope", "../events", table="events", wait=False)
    assert owner.jobs.list(P) == []
    assert runs_used(owner) == 0
