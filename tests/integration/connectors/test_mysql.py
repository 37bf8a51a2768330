"""The ``mysql`` connector against the local MariaDB (127.0.0.1:3306, root, database ``test``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pymysql
import pytest

from selfserve.data.connectors import build, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration

CONFIG = {"host": "127.0.0.1", "port": 3306, "database": "test", "user": "root"}


def admin() -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", user="root", password="", database="test", autocommit=True)


@pytest.fixture
def table(unique: str) -> Iterator[str]:
    """A table with 25 rows of varied types, dropped after the test."""
    conn = admin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""CREATE TABLE {unique} (
                    id INT PRIMARY KEY, big BIGINT UNSIGNED, tiny TINYINT, price DECIMAL(10,2), name VARCHAR(20),
                    body TEXT, doc JSON, day DATE, at DATETIME(6), ts TIMESTAMP NULL, dur TIME, flags BIT(4),
                    blob_col BLOB, score DOUBLE, ratio FLOAT, kind ENUM('a','b'), yr YEAR)"""
            )
            cur.executemany(
                f"INSERT INTO {unique} VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [
                    (
                        i,
                        18446744073709551615 - i,
                        i,
                        Decimal(f"{i}.50"),
                        f"row {i}",
                        f"text {i}",
                        json.dumps({"i": i}),
                        dt.date(2024, 1, 1) + dt.timedelta(days=i),
                        dt.datetime(2024, 1, 1, 0, 0, 0, 123456) + dt.timedelta(hours=i),
                        dt.datetime(2024, 1, 1) + dt.timedelta(hours=i),
                        dt.timedelta(seconds=i),
                        i % 16,
                        bytes([i, 255]),
                        i / 2,
                        1.5,
                        "ab"[i % 2],
                        2000 + i,
                    )
                    for i in range(25)
                ],
            )
        yield unique
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {unique}")
            cur.execute(f"DROP FUNCTION IF EXISTS {unique}_f")
        conn.close()


def count(table: str) -> int:
    conn = admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


def writing_function(table: str) -> None:
    """``<table>_f()`` deletes every row of the table: only a read-only transaction can stop it in a SELECT."""
    conn = admin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE FUNCTION {table}_f() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM {table}; RETURN 1; END"
            )
    finally:
        conn.close()


def connector(**overrides: object) -> Connector:
    return build("mysql", {**CONFIG, **overrides}, {})


def test_types_and_values(table: str) -> None:
    result, sizes = read_all(connector(), table=f"test.{table}", batch_rows=10)
    assert sizes == [10, 10, 5]
    types = dict(zip(result.schema.names, result.schema.types, strict=True))
    assert types["id"] == pa.int32() and types["big"] == pa.uint64() and types["tiny"] == pa.int8()
    assert types["price"] == pa.decimal128(10, 2)
    assert types["name"] == pa.string() and types["body"] == pa.string() and types["doc"] == pa.string()
    assert types["day"] == pa.date32() and types["at"] == pa.timestamp("us")
    assert types["ts"] == pa.timestamp("us", tz="UTC") and types["dur"] == pa.duration("us")
    assert types["flags"] == pa.int64() and types["blob_col"] == pa.binary()
    assert types["score"] == pa.float64() and types["ratio"] == pa.float32()
    assert types["kind"] == pa.string() and types["yr"] == pa.int16()
    row = result.slice(3, 1).to_pylist()[0]
    assert row["big"] == 18446744073709551612 and row["price"] == Decimal("3.50")
    assert row["at"] == dt.datetime(2024, 1, 1, 3, 0, 0, 123456) and row["flags"] == 3
    assert row["blob_col"] == bytes([3, 255]) and json.loads(row["doc"]) == {"i": 3}
    assert row["ts"] == dt.datetime(2024, 1, 1, 3, tzinfo=dt.UTC)


def test_query_and_incremental(table: str) -> None:
    c = connector()
    result, _ = read_all(c, query=f"SELECT id FROM {table} WHERE name LIKE 'row 1%'")
    assert sorted(result.column("id").to_pylist()) == [1, *range(10, 20)]
    result, sizes = read_all(c, table=table, cursor_column="id", watermark=19, batch_rows=4)
    assert result.column("id").to_pylist() == [20, 21, 22, 23, 24] and sizes == [4, 1]
    result, _ = read_all(
        c,
        query=f"WITH x AS (SELECT id, at FROM {table} WHERE name LIKE '%row%') SELECT * FROM x",
        cursor_column="at",
        watermark=dt.datetime(2024, 1, 1, 22),
    )
    assert result.column("id").to_pylist() == [22, 23, 24]
    # A watermark stored as ISO text with an offset (MariaDB itself would ignore the offset).
    result, _ = read_all(c, table=table, cursor_column="ts", watermark="2024-01-02T00:00:00+02:00")
    assert result.column("id").to_pylist() == [23, 24]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM {t}",
        "DROP TABLE {t}",
        "TRUNCATE TABLE {t}",
        "SELECT 1; DELETE FROM {t}",
        "SELECT 1) AS x; DELETE FROM {t}; SELECT (1",
        "UPDATE {t} SET name = 'x'",
        "SELECT {t}_f() AS deleted",
        "SELECT * FROM {t} INTO OUTFILE '/tmp/{t}.out'",
    ],
)
def test_read_only(table: str, query: str) -> None:
    writing_function(table)
    with pytest.raises(InvalidInput):
        read_all(connector(), query=query.format(t=table))
    assert count(table) == 25


def test_function_write_is_stopped_by_the_transaction(table: str) -> None:
    writing_function(table)
    with pytest.raises(InvalidInput, match="read-only"):
        read_all(connector(), query=f"SELECT {table}_f() AS deleted")
    assert count(table) == 25


def test_bad_and_missing_tables(table: str) -> None:
    for bad in ("x`; DROP TABLE t; --", "a.b.c", f"{table} WHERE 1"):
        with pytest.raises(InvalidInput, match="invalid table"):
            read_all(connector(), table=bad)
    with pytest.raises(InvalidInput, match="doesn't exist"):
        read_all(connector(), table="nope_missing")
    assert count(table) == 25


def test_wrong_password_is_masked() -> None:
    config, secrets = split_secrets("mysql", {"url": "mysql://root:Wr0ng-Passw0rd@127.0.0.1:3306/test"})
    c = build("mysql", config, secrets)
    with pytest.raises(InvalidInput, match="authentication failed for user 'root'") as err:
        c.test()
    assert "Wr0ng-Passw0rd" not in str(err.value)


def test_unreachable(closed_port: int) -> None:
    with pytest.raises(ServiceUnavailable, match=f"cannot reach MySQL at 127.0.0.1:{closed_port}"):
        connector(port=closed_port, connect_timeout=2).test()


def test_unknown_database() -> None:
    with pytest.raises(InvalidInput, match="Unknown database"):
        connector(database="nope_missing_db").test()
