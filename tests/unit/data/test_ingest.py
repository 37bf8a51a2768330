"""Ingestion through the SDK from a SQLite source: full, incremental by a cursor column, throttled."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from selfserve.client import Client
from selfserve.errors import InvalidInput, NotFound
from selfserve.settings import get_settings
from tests.support import Platform

P = "sales"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    db = root / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (id INTEGER, kind TEXT, amount REAL)")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, "click", i / 2) for i in range(1, 6)])
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(root)]))
    get_settings.cache_clear()
    return db


@pytest.fixture
def owner(platform: Platform, shop: Path) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    alice.sources.add(P, "shop", "sqlite", {"path": str(shop)})
    return alice


def add_events(db: Path, ids: range) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, "view", i / 2) for i in ids])


def ids_of(owner: Client, name: str) -> list[int]:
    return sorted(r[0] for r in owner.datasets.preview(P, name, limit=1000).rows)


def test_a_full_load_is_one_version_with_its_source_as_producer(owner: Client, shop: Path) -> None:
    job = owner.datasets.ingest(P, "shop", "events", table="events")
    assert job.result == {"dataset": "events", "version": 0, "rows": 5}
    assert job.progress["rows_read"] == 5
    [v0] = owner.datasets.history(P, "events")
    assert v0.producer["kind"] == "ingest" and v0.producer["source"] == "shop" and v0.producer["table"] == "events"
    assert [(c.name, c.type) for c in v0.columns] == [("id", "long"), ("kind", "string"), ("amount", "double")]

    owner.datasets.ingest(P, "shop", "events", table="events")  # append by default
    assert owner.datasets.get(P, "events").rows == 10
    owner.datasets.ingest(P, "shop", "events", table="events", mode="overwrite")
    assert owner.datasets.get(P, "events").rows == 5
    assert [h.version for h in owner.datasets.history(P, "events")] == [2, 1, 0]


def test_a_query_instead_of_a_table(owner: Client) -> None:
    owner.datasets.ingest(P, "shop", "small", query="SELECT id, amount FROM events WHERE id <= 2")
    assert ids_of(owner, "small") == [1, 2]
    with pytest.raises(InvalidInput, match="exactly one of table or query"):
        owner.datasets.ingest(P, "shop", "small", table="events", query="SELECT 1", wait=False)
    with pytest.raises(InvalidInput, match="exactly one of table or query"):
        owner.datasets.ingest(P, "shop", "small", wait=False)


def test_an_incremental_load_takes_only_the_new_rows(owner: Client, shop: Path) -> None:
    first = owner.datasets.ingest(P, "shop", "events", table="events", incremental="id", batch_rows=2)
    assert first.result and first.result["rows"] == 5
    add_events(shop, range(6, 9))
    second = owner.datasets.ingest(P, "shop", "events", table="events", incremental="id", batch_rows=2)
    assert second.result == {"dataset": "events", "version": 1, "rows": 3}
    assert ids_of(owner, "events") == list(range(1, 9))

    with pytest.raises(InvalidInput, match="no new rows"):
        owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    assert owner.datasets.get(P, "events").current_version == 1
    with pytest.raises(InvalidInput, match="loaded incrementally by 'id'"):
        owner.datasets.ingest(P, "shop", "events", table="events", incremental="amount")
    with pytest.raises(InvalidInput, match="cursor column 'nope'"):
        owner.datasets.ingest(P, "shop", "other", table="events", incremental="nope")
    # The watermark is per dataset: another dataset from the same source starts from the beginning.
    assert owner.datasets.ingest(P, "shop", "copy", table="events", incremental="id").result["rows"] == 8  # type: ignore[index]


def test_a_failed_incremental_load_keeps_the_watermark(owner: Client, shop: Path) -> None:
    owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    owner.datasets.set_contract(P, "events", "columns:\n  kind: {type: string, allowed: [click]}\n")
    add_events(shop, range(6, 8))  # kind "view": the contract refuses them
    with pytest.raises(InvalidInput, match="contract failed"):
        owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    owner.datasets.remove_contract(P, "events")
    again = owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    assert again.result and again.result["rows"] == 2  # the refused rows were not skipped
    assert ids_of(owner, "events") == list(range(1, 8))


def test_a_throttled_load_keeps_to_its_rate(owner: Client, shop: Path) -> None:
    add_events(shop, range(6, 61))  # 60 rows
    job = owner.datasets.ingest(P, "shop", "events", table="events", max_rows_per_second=40)
    assert job.result and job.result["rows"] == 60
    assert job.started_at and job.finished_at
    # 60 rows at 40 a second: the second chunk of 40 may start only after one second.
    assert (job.finished_at - job.started_at).total_seconds() >= 1.0


def test_bad_ingests_fail_with_the_sources_reason(owner: Client) -> None:
    with pytest.raises(InvalidInput, match="no_such_table"):
        owner.datasets.ingest(P, "shop", "events", table="no_such_table")
    with pytest.raises(InvalidInput, match="SQLite refused"):
        owner.datasets.ingest(P, "shop", "events", query="DELETE FROM events")
    with pytest.raises(NotFound):
        owner.datasets.get(P, "events")
    assert owner.datasets.ingest(P, "shop", "events", table="events").result["rows"] == 5  # type: ignore[index]


def test_a_deleted_dataset_loads_from_the_beginning_again(owner: Client, shop: Path) -> None:
    owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    owner.datasets.delete(P, "events")
    again = owner.datasets.ingest(P, "shop", "events", table="events", incremental="id")
    assert again.result == {"dataset": "events", "version": 0, "rows": 5}
    assert ids_of(owner, "events") == [1, 2, 3, 4, 5]
