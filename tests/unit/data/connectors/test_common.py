"""Shared connector helpers: identifiers, SQL, batching, client-side incremental, JSON rows."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from selfserve.data.connectors import ReadRequest
from selfserve.data.connectors._common import (
    ColumnBatcher,
    RowBatcher,
    dot_path,
    filter_after,
    quote_identifier,
    rebatch,
    select_sql,
    split_url_password,
)
from selfserve.errors import InvalidInput


@pytest.mark.parametrize("name", ["events", "public.events", "_t1", "Sales$2024"])
def test_identifiers_accepted(name: str) -> None:
    assert quote_identifier(name).count('"') == 2 * len(name.split("."))


@pytest.mark.parametrize(
    "name",
    ["", "a.b.c", "1abc", 'x"; DROP TABLE t; --', "a b", "t;", "a.", "x" * 64, "tab`le", "a--b"],
)
def test_identifiers_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid table"):
        quote_identifier(name)


def test_select_sql() -> None:
    sql, params = select_sql(ReadRequest(table="s.t"), quote_char='"')
    assert sql == 'SELECT * FROM "s"."t"' and params == []
    sql, params = select_sql(ReadRequest(query="select 1 as x;  ", cursor_column="x", watermark=3), quote_char="`")
    assert sql == "SELECT * FROM (select 1 as x) AS _selfserve_q WHERE `x` > ? ORDER BY `x`" and params == [3]
    sql, _ = select_sql(ReadRequest(table="t", cursor_column="id", watermark=5), quote_char='"', literal=repr)
    assert sql == 'SELECT * FROM "t" WHERE "id" > 5 ORDER BY "id"'
    sql, _ = select_sql(ReadRequest(table="t", cursor_column="id"), quote_char='"')
    assert sql.endswith('ORDER BY "id"')
    with pytest.raises(InvalidInput, match="cursor column"):
        select_sql(ReadRequest(table="t", cursor_column="id; drop", watermark=1), quote_char='"')
    with pytest.raises(InvalidInput, match="needs a cursor column"):
        select_sql(ReadRequest(table="t", watermark=1), quote_char='"')
    with pytest.raises(InvalidInput, match="query is empty"):
        select_sql(ReadRequest(query=" ; "), quote_char='"')
    with pytest.raises(InvalidInput, match="table or a query"):
        select_sql(ReadRequest(), quote_char='"')


def test_rebatch_exact_sizes() -> None:
    batches = [pa.record_batch({"a": list(range(i, i + n))}) for i, n in ((0, 3), (3, 0), (3, 7), (10, 1), (11, 12))]
    out = list(rebatch(batches, 5))
    assert [b.num_rows for b in out] == [5, 5, 5, 5, 3]
    assert pa.Table.from_batches(out).column("a").to_pylist() == list(range(23))
    assert list(rebatch([], 5)) == []


def test_filter_after() -> None:
    batch = pa.record_batch(
        {
            "n": [1, 5, None, 9],
            "s": ["1", "12", "3", None],
            "t": pa.array([datetime(2024, 1, d) for d in (1, 2, 3, 4)], pa.timestamp("us", tz="UTC")),
        }
    )
    assert filter_after(batch, "n", 4).column("n").to_pylist() == [5, 9]
    assert filter_after(batch, "s", 2).column("s").to_pylist() == ["12", "3"]  # numbers compare as numbers
    assert filter_after(batch, "t", "2024-01-02T00:00:00+00:00").num_rows == 2
    assert filter_after(batch, "t", datetime(2024, 1, 3)).num_rows == 1
    assert filter_after(batch, None, 1) is batch and filter_after(batch, "n", None) is batch
    with pytest.raises(InvalidInput, match="cannot compare cursor column 'n'"):
        filter_after(batch, "n", "yesterday")


def test_row_batcher_fixes_the_schema() -> None:
    rows = RowBatcher()
    first = rows.batch([{"a": 1, "b": None, "c": {"x": 1}}, {"a": 2, "b": None, "c": [1]}])
    assert first.schema.types == [pa.int64(), pa.string(), pa.string()]
    assert first.column("c").to_pylist() == ['{"x": 1}', "[1]"]
    second = rows.batch([{"a": 3, "b": 7}, {"b": "x"}])
    assert second.schema == first.schema
    assert second.column("b").to_pylist() == ["7", "x"]
    with pytest.raises(InvalidInput, match="field 'z' first appears after 4 records"):
        rows.batch([{"a": 4, "z": 1}])
    with pytest.raises(InvalidInput, match="column 'a'"):
        rows.batch([{"a": "text"}])
    mixed = RowBatcher().batch([{"v": 1}, {"v": "one"}, {"v": True}])
    assert mixed.column("v").to_pylist() == ["1", "one", "true"]
    only = RowBatcher(["a"]).batch([{"a": 1, "dropped": 2}])
    assert only.schema.names == ["a"]


def test_column_batcher_with_declared_types() -> None:
    columns = ColumnBatcher(["i", "x"], [pa.int64(), None])
    assert columns.batch([[1, 2], [None, None]]).schema.types == [pa.int64(), pa.string()]
    with pytest.raises(InvalidInput, match="column 'i'"):
        columns.batch([["a"], ["b"]])


def test_dot_path() -> None:
    body = {"data": {"items": [{"id": 1}], "next": None}, "list": [[0, 1], [2, 3]]}
    assert dot_path(body, "data.items") == (True, [{"id": 1}])
    assert dot_path(body, "data.next") == (True, None)
    assert dot_path(body, "list.1.0") == (True, 2)
    assert dot_path(body, "data.missing") == (False, None)
    assert dot_path(body, None) == (True, body)


def test_split_url_password() -> None:
    assert split_url_password("postgresql://u:p%2Fw@h:1/db?sslmode=require") == (
        "postgresql://u@h:1/db?sslmode=require",
        "p/w",
    )
    assert split_url_password("redis://h:6379/0") == ("redis://h:6379/0", None)
    assert split_url_password("mysql://:pw@[::1]:3306/d") == ("mysql://[::1]:3306/d", "pw")
