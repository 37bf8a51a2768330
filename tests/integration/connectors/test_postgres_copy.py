"""The ``postgres`` connector's COPY path (``COPY (query) TO STDOUT (FORMAT csv)`` parsed by Arrow) gives
exactly what its row path (a named cursor, values loaded by psycopg) gives, and falls back to the row
path where it cannot. Against the local PostgreSQL (127.0.0.1:5432, database ``test``)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from selfserve.data.connectors import _postgres, build
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput
from tests.integration.connectors.conftest import read_all
from tests.support import Platform

pytestmark = pytest.mark.integration

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
CONFIG = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}

COLUMNS = """
    id int PRIMARY KEY, txt text, vc varchar(20), ch char(4), nm name, b boolean, i2 smallint, i8 bigint,
    o oid, f4 real, f8 double precision, n numeric(12, 2), wide numeric(38, 10), huge numeric(50, 5),
    free numeric, d date, ts timestamp, tstz timestamptz, t time, iv interval, by bytea, js json,
    jb jsonb, ints int[], texts text[], u uuid, ip inet, mood {enum}, tstzs timestamptz[]
"""
NAMES = [c.split()[0] for c in re.split(r",(?![^(]*\))", COLUMNS)]  # commas outside parentheses
TRICKY_TEXT = [
    "",
    " ",
    "NULL",
    "null",
    "NA",
    "NaN",
    "N/A",
    "a,b",
    'say "hi"',
    '"',
    '""',
    "line1\nline2",
    "cr\rlf\r\n",
    "back\\slash",
    "\\.",
    "\\N",
    "tab\there",
    "héllo wörld",
    "日本語テキスト",
    "emoji 😀🚀",
    "\u00a0nbsp",
    "t",
    "f",
]


def _rows() -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i, text in enumerate(TRICKY_TEXT):
        rows.append(
            (
                i,
                text,
                text[:20],
                text[:4],
                text[:60],
                [True, False, None][i % 3],
                [-32768, 32767, 0][i % 3],
                [-(2**63), 2**63 - 1, i][i % 3],
                [0, 4294967295, i][i % 3],
                [float("nan"), float("inf"), float("-inf"), -0.0, 0.1, 3.4e38, 1e-45, 1.5][i % 8],
                [float("nan"), float("inf"), float("-inf"), -0.0, 0.1, 1.7976931348623157e308, 5e-324, 1 / 3][i % 8],
                [Decimal("9999999999.99"), Decimal("-0.01"), Decimal("0.00"), Decimal(i)][i % 4],
                [Decimal("9999999999999999999999999999.9999999999"), Decimal("-0.0000000001"), Decimal(i)][i % 3],
                [Decimal("123456789012345678901234567890123456789012345.12345"), Decimal(-i)][i % 2],
                [
                    Decimal("0.1"),
                    Decimal("3.14159265358979323846264338327950288419716939937510"),
                    Decimal("NaN"),
                    Decimal("1e-30"),
                    Decimal("12345678901234567890123456789"),
                    Decimal("Infinity"),
                ][i % 6],
                [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29)][i % 3],
                [
                    dt.datetime(1, 1, 1),
                    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
                    dt.datetime(2024, 1, 1, 0, 0, 0, 5),
                ][i % 3],
                [
                    dt.datetime(1900, 1, 1, tzinfo=dt.UTC),  # in Europe/Paris: LMT, an offset with seconds
                    dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC),  # a DST change in Europe
                    dt.datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
                    dt.datetime(1, 1, 2, tzinfo=dt.UTC),
                ][i % 4],
                [dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 30, 0, 5)][i % 3],
                [dt.timedelta(days=-1, seconds=5), dt.timedelta(days=400, microseconds=1), dt.timedelta(0)][i % 3],
                [b"", bytes(range(256)), b'a,b\n"c"', b"\x00"][i % 4],
                json.dumps({"text": text, "n": 1.50, "list": [1, "a,b"]}),
                json.dumps({"text": text, "n": 1.50, "big": 12345678901234567890}),
                [[1, None, -3], [], None][i % 3],
                [[text, None, "a,b", 'q"uote', "{x}", ""], []][i % 2],
                f"00000000-0000-0000-0000-{i:012d}",
                ["192.168.0.1", "10.0.0.0/8", "::ffff:1.2.3.4", "2001:db8::1"][i % 4],
                ["sad", "ok", "happy"][i % 3],
                [[dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None]][0],
            )
        )
    # A row of NULLs but its id, and rows where every text is the empty string or NULL.
    rows.append((100, *([None] * (len(NAMES) - 1))))
    return rows


@pytest.fixture
def table(unique: str) -> Iterator[str]:
    """A table of every type the connector reads, with values that are hard to carry as CSV text."""
    enum = f"{unique}_mood"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE TYPE {enum} AS ENUM ('sad', 'ok', 'happy')")
        conn.execute(f"CREATE TABLE {unique} ({COLUMNS.format(enum=enum)})")
        with conn.cursor() as cur:
            marks = ", ".join(["%s"] * len(NAMES))
            cur.executemany(f"INSERT INTO {unique} VALUES ({marks})", _rows())
    try:
        yield unique
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {unique}")
            conn.execute(f"DROP TYPE IF EXISTS {enum}")


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the reads took, in order: ``copy`` or ``rows``."""
    taken: list[str] = []
    read_rows, build_plan = _postgres._read_rows, _postgres._CopyPlan.build

    def rows(*args: Any) -> Iterator[pa.RecordBatch]:
        taken.append("rows")
        return read_rows(*args)

    def plan(conn: Any, description: Any) -> Any:
        result = build_plan(conn, description)
        if result is not None:
            taken.append("copy")
        return result

    monkeypatch.setattr(_postgres, "_read_rows", rows)
    monkeypatch.setattr(_postgres._CopyPlan, "build", staticmethod(plan))
    return taken


def connector() -> Connector:
    return build("postgres", CONFIG, {})


def row_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, every read takes the row path."""
    monkeypatch.setattr(_postgres._CopyPlan, "build", staticmethod(lambda conn, description: None))


def both_paths(monkeypatch: pytest.MonkeyPatch, **request: Any) -> tuple[tuple[pa.Table, list[int]], ...]:
    """The same read through the COPY path, then through the row path."""
    copy = read_all(connector(), **request)
    with monkeypatch.context() as m:
        row_path(m)
        rows = read_all(connector(), **request)
    return copy, rows


def assert_same(copy: pa.Table, rows: pa.Table) -> None:
    """Equal schemas and values; NaN equals NaN, and -0.0 is told from 0.0."""
    assert copy.schema == rows.schema
    for a, b in zip(copy.to_pylist(), rows.to_pylist(), strict=True):
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, float) and isinstance(y, float):
                assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y)), (
                    key,
                    x,
                    y,
                )
            else:
                assert x == y, (key, x, y)


@pytest.mark.parametrize(
    "env",
    [
        {},
        # Offsets with seconds (Paris before 1911) and DST; a half-hour zone and bytea as escapes.
        {"PGTZ": "Europe/Paris", "PGDATESTYLE": "ISO, DMY"},
        {"PGTZ": "America/St_Johns", "PGOPTIONS": "-c bytea_output=escape"},
    ],
)
def test_copy_gives_what_the_row_path_gives(
    table: str, env: dict[str, str], paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (copy, copy_sizes), (rows, row_sizes) = both_paths(
        monkeypatch, query=f"SELECT * FROM {table} ORDER BY id", batch_rows=5
    )
    assert paths == ["copy", "rows"]
    assert copy.num_rows == len(TRICKY_TEXT) + 1 and copy_sizes == row_sizes == [5, 5, 5, 5, 4]
    assert_same(copy, rows)


def test_values(table: str) -> None:
    result, _ = read_all(connector(), query=f"SELECT * FROM {table} ORDER BY id")
    by_id = {r["id"]: r for r in result.to_pylist()}
    # NULL and the empty string stay apart, in every text type and inside arrays.
    assert by_id[0]["txt"] == "" and by_id[0]["vc"] == "" and by_id[0]["ch"] == "    " and by_id[100]["txt"] is None
    assert by_id[0]["texts"] == ["", None, "a,b", 'q"uote', "{x}", ""]
    # Text that a CSV reader could take for something else comes back as it was.
    assert [by_id[i]["txt"] for i in range(len(TRICKY_TEXT))] == TRICKY_TEXT
    assert by_id[17]["txt"] == "héllo wörld" and by_id[19]["txt"] == "emoji 😀🚀"
    assert json.loads(by_id[18]["jb"])["text"] == "日本語テキスト"
    # Numbers keep their precision.
    assert by_id[0]["n"] == Decimal("9999999999.99") and by_id[1]["n"] == Decimal("-0.01")
    assert by_id[0]["wide"] == Decimal("9999999999999999999999999999.9999999999")
    assert by_id[1]["wide"] == Decimal("-1E-10")
    assert by_id[0]["huge"] == Decimal("123456789012345678901234567890123456789012345.12345")
    assert by_id[1]["free"] == 3.141592653589793 and math.isnan(by_id[2]["free"]) and by_id[5]["free"] == math.inf
    assert by_id[7]["f8"] == 1 / 3 and by_id[5]["f8"] == 1.7976931348623157e308 and by_id[6]["f8"] == 5e-324
    assert math.isnan(by_id[0]["f8"]) and by_id[1]["f8"] == math.inf and by_id[2]["f8"] == -math.inf
    assert by_id[0]["i8"] == -(2**63) and by_id[1]["i8"] == 2**63 - 1 and by_id[1]["o"] == 4294967295
    # Booleans, with NULL.
    assert [by_id[i]["b"] for i in range(3)] == [True, False, None]
    # Instants, whatever the session's time zone.
    assert by_id[0]["tstz"] == dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
    assert by_id[2]["tstz"] == dt.datetime(2024, 6, 1, 6, 30, 0, 123456, tzinfo=dt.UTC)
    assert by_id[1]["ts"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999) and by_id[2]["d"] == dt.date(2024, 2, 29)
    # Bytes, the empty ones too.
    assert by_id[0]["by"] == b"" and by_id[1]["by"] == bytes(range(256)) and by_id[2]["by"] == b'a,b\n"c"'
    assert by_id[100]["by"] is None
    types = dict(zip(result.schema.names, result.schema.types, strict=True))
    assert types["tstz"] == pa.timestamp("us", tz="UTC") and types["huge"] == pa.decimal256(50, 5)
    assert types["by"] == pa.binary() and types["mood"] == pa.string() and types["ip"] == pa.string()


def test_incremental_read_in_cursor_order(table: str, paths: list[str]) -> None:
    result, sizes = read_all(connector(), table=table, cursor_column="id", watermark=15, batch_rows=3)
    assert result.column("id").to_pylist() == [*range(16, len(TRICKY_TEXT)), 100] and sizes == [3, 3, 2]
    result, _ = read_all(
        connector(),
        query=f"SELECT id, tstz FROM {table} WHERE txt <> 'x'",
        cursor_column="tstz",
        watermark=dt.datetime(2024, 3, 31, tzinfo=dt.UTC),
    )
    stamps = result.column("tstz").to_pylist()
    assert stamps == sorted(stamps) and len(stamps) == 12
    assert stamps[0] == dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC)
    assert paths == ["copy", "copy"]


def test_incremental_ingest(sqlite_platform: Platform, table: str) -> None:
    owner = sqlite_platform.user("alice")
    owner.projects.create("p")
    owner.sources.add("p", "pg", "postgres", CONFIG)
    query = f"SELECT id, txt, b, n, free, tstz, by, jb, texts FROM {table}"  # Delta holds no decimal256
    first = owner.datasets.ingest("p", "pg", "t", query=query, incremental="id", batch_rows=4)
    assert first.result == {"dataset": "t", "version": 0, "rows": len(TRICKY_TEXT) + 1}
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} (id, txt, tstz) VALUES (101, '', '2030-01-01Z'), (102, NULL, NULL)")
    second = owner.datasets.ingest("p", "pg", "t", query=query, incremental="id")
    assert second.result == {"dataset": "t", "version": 1, "rows": 2}
    preview = owner.datasets.preview("p", "t", limit=100)
    rows = {r[0]: dict(zip([c.name for c in preview.columns], r, strict=True)) for r in preview.rows}
    assert sorted(rows) == [*range(len(TRICKY_TEXT)), 100, 101, 102]
    assert rows[101]["txt"] == "" and rows[102]["txt"] is None and rows[7]["txt"] == "a,b"
    assert rows[11]["txt"] == "line1\nline2"


def test_a_bad_query_is_refused_as_before(table: str) -> None:
    with pytest.raises(InvalidInput, match=r"syntax error.*\(a source query is one SELECT statement\)") as err:
        read_all(connector(), query="SELEC 1")
    assert err.value.status_code == 422
    with pytest.raises(InvalidInput, match='column "nope" does not exist'):
        read_all(connector(), query=f"SELECT nope FROM {table}")


def test_an_error_during_the_copy(table: str) -> None:
    query = "SELECT g, 1 / (g - 70000) AS x FROM generate_series(1, 100000) AS g"
    with pytest.raises(InvalidInput, match="division by zero"):
        read_all(connector(), query=query, batch_rows=1000)
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'selfserve' AND state <> 'idle'"
            " AND query LIKE %s",
            ("%g - 70000%",),
        ).fetchone()
        assert rows == (0,)


def test_a_value_arrow_cannot_hold(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither path can hold these (Python and Arrow stop at year 9999 and have no infinity): both refuse them.
    for query in ("SELECT 'infinity'::date AS d", "SELECT 'NaN'::numeric(5, 2) AS n"):
        with pytest.raises(InvalidInput, match="d|n"):
            read_all(connector(), query=query)
        with monkeypatch.context() as m:
            row_path(m)
            with pytest.raises(InvalidInput):
                read_all(connector(), query=query)
    with pytest.raises(InvalidInput, match=r"column 'd': a value does not fit the type date32\[day\]"):
        read_all(connector(), query="SELECT 'infinity'::date AS d")


def test_fallback_to_the_row_path(table: str, paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrow reads UTF-8 only: in another client encoding the rows go through psycopg.
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    result, sizes = read_all(connector(), query=f"SELECT id, txt FROM {table} WHERE id < 18 ORDER BY id", batch_rows=10)
    assert paths == ["rows"] and sizes == [10, 8]
    assert result.column("txt").to_pylist() == TRICKY_TEXT[:18]


def test_a_query_without_columns(table: str) -> None:
    with pytest.raises(InvalidInput, match="the query returns no columns"):
        read_all(connector(), query=f"SELECT FROM {table}")


@pytest.mark.parametrize("style", ["SQL, DMY", "German", "Postgres, MDY"])
def test_other_date_styles(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dates and timestamps in another style are loaded by psycopg, as on the row path.
    monkeypatch.setenv("PGDATESTYLE", style)
    query = "SELECT date '2024-02-29' AS d, timestamp '2024-02-29 13:14:15.5' AS ts, time '01:02:03' AS t"
    (copy, _), (rows, _) = both_paths(monkeypatch, query=query)
    assert (
        copy.to_pylist()
        == rows.to_pylist()
        == [{"d": dt.date(2024, 2, 29), "ts": dt.datetime(2024, 2, 29, 13, 14, 15, 500000), "t": dt.time(1, 2, 3)}]
    )


def test_repeated_column_names(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    query = "SELECT 1 AS a, now() AS a, 'x' AS a"
    (copy, _), (rows, _) = both_paths(monkeypatch, query=query)
    assert copy.schema.names == ["a", "a", "a"] and copy.to_pydict() == rows.to_pydict()
    assert paths == ["copy", "rows"]


def test_single_column_of_nulls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A row holding one NULL is an empty line of CSV.
    query = "SELECT CASE WHEN g % 2 = 0 THEN NULL ELSE g::text END AS v FROM generate_series(1, 6) AS g"
    (copy, sizes), (rows, _) = both_paths(monkeypatch, query=query, batch_rows=4)
    assert copy.column("v").to_pylist() == ["1", None, "3", None, "5", None] and sizes == [4, 2]
    assert_same(copy, rows)
