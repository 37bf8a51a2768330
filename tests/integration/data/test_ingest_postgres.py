"""Ingestion from a real PostgreSQL server through the SDK: incremental loads, masked secrets, a source down."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from selfserve.client import Client
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.support import Platform, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("SELFSERVE_TEST_POSTGRES_URL"), reason="SELFSERVE_TEST_POSTGRES_URL is not set"
    ),
]
P = "sales"
PASSWORD = "pg-Pa55word-8812"


@pytest.fixture
def table() -> Iterator[str]:
    """A fresh table of events in the test database, dropped afterwards."""
    name = f"events_{uuid.uuid4().hex[:8]}"
    engine = create_engine(os.environ["SELFSERVE_TEST_POSTGRES_URL"])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (id integer, kind text, at timestamptz)"))
        conn.execute(text(f"INSERT INTO {name} SELECT i, 'click', now() FROM generate_series(1, 5) i"))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture
def owner(sqlite_platform: Platform) -> Client:
    alice = sqlite_platform.user("alice")
    alice.projects.create(P)
    config = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}
    alice.sources.add(P, "warehouse", "postgres", config, secrets={"password": PASSWORD})
    return alice


def test_an_incremental_load_from_postgres(owner: Client, table: str) -> None:
    assert owner.sources.test(P, "warehouse").ok
    first = owner.datasets.ingest(P, "warehouse", "events", table=f"public.{table}", incremental="id", batch_rows=2)
    assert first.result and first.result["rows"] == 5
    engine = create_engine(os.environ["SELFSERVE_TEST_POSTGRES_URL"])
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} SELECT i, 'view', now() FROM generate_series(6, 8) i"))
    engine.dispose()
    second = owner.datasets.ingest(P, "warehouse", "events", table=f"public.{table}", incremental="id")
    assert second.result == {"dataset": "events", "version": 1, "rows": 3}
    ids = sorted(r[0] for r in owner.datasets.preview(P, "events", limit=100).rows)
    assert ids == list(range(1, 9))
    assert [c.type for c in owner.datasets.schema(P, "events")] == ["integer", "string", "timestamp"]


def test_a_failing_read_never_shows_the_password(owner: Client) -> None:
    with pytest.raises(InvalidInput) as e:
        owner.datasets.ingest(P, "warehouse", "events", query=f"SELECT '{PASSWORD}'::integer AS x")
    assert PASSWORD not in e.value.message and "***" in e.value.message
    jobs = owner.jobs.list(P)
    assert jobs[0].status == "failed" and PASSWORD not in (jobs[0].error or "")
    assert PASSWORD not in str(jobs[0].result)


def test_a_source_that_is_down_fails_the_job_as_unavailable(owner: Client) -> None:
    config = {"host": "127.0.0.1", "port": free_port(), "database": "test", "user": "postgres", "connect_timeout": 2}
    owner.sources.add(P, "down", "postgres", config, secrets={"password": PASSWORD})
    result = owner.sources.test(P, "down")
    assert not result.ok and PASSWORD not in result.message
    with pytest.raises(ServiceUnavailable) as e:
        owner.datasets.ingest(P, "down", "events", table="public.anything")
    assert PASSWORD not in e.value.message
    usage = {i.resource: i.amount for i in owner.quotas.usage(P).items}
    assert usage["runs"] == 0
