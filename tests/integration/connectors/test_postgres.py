"""The ``postgres`` connector against the local PostgreSQL (127.0.0.1:5432, database ``test``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from selfserve.data.connectors import ReadRequest, build, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
CONFIG = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}


@pytest.fixture
def table(unique: str) -> Iterator[str]:
    """A table with 25 rows of varied types, dropped after the test."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE {unique} (
                id int PRIMARY KEY, big bigint, small smallint, price numeric(10,2), ratio numeric,
                name text, code varchar(5), flag boolean, day date, at timestamptz, naive timestamp,
                tags int[], doc jsonb, blob bytea, uid uuid, score double precision, spent interval)"""
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {unique} VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [
                    (
                        i,
                        i * 10_000_000_000,
                        i,
                        Decimal(f"{i}.25"),
                        Decimal(i) / 3,
                        f"row {i}",
                        f"c{i}",
                        i % 2 == 0,
                        dt.date(2024, 1, 1) + dt.timedelta(days=i),
                        dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i),
                        dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i),
                        [i, i + 1],
                        json.dumps({"i": i}),
                        bytes([i]),
                        f"00000000-0000-0000-0000-{i:012d}",
                        i / 2,
                        dt.timedelta(seconds=i),
                    )
                    for i in range(25)
                ],
            )
    try:
        yield unique
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {unique}")


def count(table: str) -> int:
    with psycopg.connect(DSN) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def connector(**overrides: object) -> Connector:
    return build("postgres", {**CONFIG, **overrides}, {})


def test_types_and_values(table: str) -> None:
    result, sizes = read_all(connector(), table=f"public.{table}", batch_rows=10)
    assert sizes == [10, 10, 5]
    types = dict(zip(result.schema.names, result.schema.types, strict=True))
    assert types["id"] == pa.int32() and types["big"] == pa.int64() and types["small"] == pa.int16()
    assert types["price"] == pa.decimal128(10, 2)
    assert types["ratio"] == pa.float64()
    assert types["name"] == pa.string() and types["code"] == pa.string()
    assert types["flag"] == pa.bool_() and types["day"] == pa.date32()
    assert types["at"] == pa.timestamp("us", tz="UTC") and types["naive"] == pa.timestamp("us")
    assert types["tags"] == pa.list_(pa.int32())
    assert types["doc"] == pa.string() and types["blob"] == pa.binary() and types["uid"] == pa.string()
    assert types["score"] == pa.float64() and types["spent"] == pa.duration("us")
    row = result.slice(3, 1).to_pylist()[0]
    assert row["price"] == Decimal("3.25") and row["tags"] == [3, 4] and json.loads(row["doc"]) == {"i": 3}
    assert row["at"] == dt.datetime(2024, 1, 1, 3, tzinfo=dt.UTC)
    assert row["uid"] == "00000000-0000-0000-0000-000000000003" and row["spent"] == dt.timedelta(seconds=3)


def test_query_and_incremental(table: str) -> None:
    c = connector()
    result, _ = read_all(c, query=f"SELECT id, name FROM {table} WHERE name LIKE 'row 1%'", batch_rows=100)
    assert sorted(result.column("id").to_pylist()) == [1, *range(10, 20)]
    result, sizes = read_all(c, table=table, cursor_column="id", watermark=19, batch_rows=4)
    assert result.column("id").to_pylist() == [20, 21, 22, 23, 24] and sizes == [4, 1]
    # A query with '%' and a watermark: the watermark is rendered as a literal, not a placeholder.
    result, _ = read_all(
        c,
        query=f"SELECT id, at FROM {table} WHERE name LIKE 'row%'",
        cursor_column="at",
        watermark=dt.datetime(2024, 1, 1, 22, tzinfo=dt.UTC),
    )
    assert result.column("id").to_pylist() == [23, 24]
    result, _ = read_all(c, table=table, cursor_column="naive", watermark="2024-01-01 00:20:00")
    assert result.column("id").to_pylist() == [21, 22, 23, 24]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM {t}",
        "DELETE FROM {t} RETURNING *",
        "DROP TABLE {t}",
        "WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d",
        "SELECT 1; DELETE FROM {t}",
        "SELECT 1) AS x; DELETE FROM {t}; SELECT (1",
        "UPDATE {t} SET name = 'x'",
        "SELECT nextval('{t}_seq')",
        "SELECT * FROM {t} FOR UPDATE",
    ],
)
def test_read_only(table: str, query: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {table}_seq")
    try:
        with pytest.raises(InvalidInput):
            read_all(connector(), query=query.format(t=table))
        assert count(table) == 25
        with psycopg.connect(DSN) as conn:
            row = conn.execute(f"SELECT last_value, is_called FROM {table}_seq").fetchone()
            assert row == (1, False)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SEQUENCE IF EXISTS {table}_seq")


def test_bad_and_missing_tables(table: str) -> None:
    for bad in ('x"; DROP TABLE t; --', "a.b.c", "1abc", f"{table} WHERE true"):
        with pytest.raises(InvalidInput, match="invalid table"):
            read_all(connector(), table=bad)
    with pytest.raises(InvalidInput, match='relation "public.nope_missing" does not exist'):
        read_all(connector(), table="public.nope_missing")
    with pytest.raises(InvalidInput, match="syntax error"):
        read_all(connector(), query="SELEC 1")
    assert count(table) == 25


def test_url_with_password_and_unknown_role() -> None:
    config, secrets = split_secrets("postgres", {"url": "postgresql://nobody_ss:Sup3r-Secret@127.0.0.1:5432/test"})
    assert "Sup3r-Secret" not in json.dumps(config)
    c = build("postgres", config, secrets)
    # PostgreSQL here trusts 127.0.0.1, so an unknown role is the refusal we can provoke.
    with pytest.raises(InvalidInput, match="authentication failed for user 'nobody_ss'") as err:
        c.test()
    assert "Sup3r-Secret" not in str(err.value)


def test_password_is_masked_in_every_message() -> None:
    # The password is also the (unknown) database name, so the server's message repeats it.
    c = build("postgres", {**CONFIG, "database": "Sup3r-Secret"}, {"password": "Sup3r-Secret"})
    with pytest.raises(InvalidInput, match=r'database "\*\*\*" does not exist') as err:
        c.test()
    assert "Sup3r-Secret" not in str(err.value)
    assert err.value.__cause__ is None  # the driver's exception (with the secret) is not chained


def test_unreachable(closed_port: int) -> None:
    with pytest.raises(ServiceUnavailable, match=f"cannot reach PostgreSQL at 127.0.0.1:{closed_port}"):
        connector(port=closed_port, connect_timeout=2).test()
    with pytest.raises(ServiceUnavailable):
        read_all(connector(port=closed_port, connect_timeout=2), table="t")


def test_test_ok_and_empty_result(table: str) -> None:
    connector().test()
    result, sizes = read_all(connector(), table=table, cursor_column="id", watermark=1000)
    assert sizes == [] and result.num_rows == 0


def test_stopping_early_leaves_no_open_transaction(table: str) -> None:
    reader = iter(connector().read(ReadRequest(table=table, batch_rows=5)))
    assert next(reader).num_rows == 5
    # This read's own session (other tests may be reading PostgreSQL at the same time).
    own = "SELECT pid FROM pg_stat_activity WHERE application_name = 'selfserve' AND query LIKE %s"
    with psycopg.connect(DSN, autocommit=True) as conn:
        pids = [pid for (pid,) in conn.execute(own, (f"%{table}%",)).fetchall()]
        assert pids, "the read's session was not found"
        reader.close()  # type: ignore[attr-defined]
        busy = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND state <> 'idle'", (pids,)
        ).fetchone()
        assert busy == (0,)
