"""The ``sqlite`` connector: a database file under the allowed roots, opened read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.data.connectors import build
from selfserve.errors import InvalidInput
from selfserve.settings import Settings, get_settings
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def database(root: Path) -> Path:
    path = root / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, price REAL, paid BOOLEAN, note, raw BLOB, at TEXT)"
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?)",
            [(i, f"item {i}", i * 1.25, i % 2, None, bytes([i]), f"2024-01-{1 + i:02d}") for i in range(25)],
        )
    conn.close()
    return path


def count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
    finally:
        conn.close()


def test_types_and_batches(database: Path, settings: Settings) -> None:
    c = build("sqlite", {"path": str(database)}, {}, settings)
    c.test()
    table, sizes = read_all(c, table="orders", batch_rows=10)
    assert sizes == [10, 10, 5]
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types == {
        "id": pa.int64(),
        "item": pa.string(),
        "price": pa.float64(),
        "paid": pa.bool_(),
        "note": pa.string(),
        "raw": pa.binary(),
        "at": pa.string(),
    }
    assert table.column("id").to_pylist() == list(range(25))


def test_query_and_incremental(database: Path, settings: Settings) -> None:
    c = build("sqlite", {"path": str(database)}, {}, settings)
    table, _ = read_all(c, query="SELECT id, price * 2 AS double_price FROM orders WHERE item LIKE 'item 1%'")
    assert table.schema.field("double_price").type == pa.float64()
    assert sorted(table.column("id").to_pylist()) == [1, *range(10, 20)]
    table, sizes = read_all(c, table="main.orders", cursor_column="id", watermark=20, batch_rows=3)
    assert table.column("id").to_pylist() == [21, 22, 23, 24] and sizes == [3, 1]
    table, _ = read_all(c, table="orders", cursor_column="at", watermark="2024-01-24")
    assert table.column("id").to_pylist() == [24]


@pytest.mark.parametrize(
    "query",
    ["DELETE FROM orders", "DROP TABLE orders", "SELECT 1; DELETE FROM orders", "UPDATE orders SET price = 0"],
)
def test_read_only(database: Path, settings: Settings, query: str) -> None:
    with pytest.raises(InvalidInput):
        read_all(build("sqlite", {"path": str(database)}, {}, settings), query=query)
    assert count(database) == 25


def test_writing_pragma_is_refused(database: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput):
        read_all(build("sqlite", {"path": str(database)}, {}, settings), query="SELECT * FROM pragma_user_version(7)")
    assert count(database) == 25


def test_bad_and_missing_tables(database: Path, settings: Settings) -> None:
    c = build("sqlite", {"path": str(database)}, {}, settings)
    with pytest.raises(InvalidInput, match="invalid table"):
        read_all(c, table="orders; DROP TABLE orders")
    with pytest.raises(InvalidInput, match="no such table"):
        read_all(c, table="missing")


def test_path_checks(database: Path, settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="outside the directories open to file sources"):
        build("sqlite", {"path": f"{database.parent}/../elsewhere.db"}, {}, settings).test()
    (database.parent / "notes.db").write_text("not a database at all" * 100)
    with pytest.raises(InvalidInput, match="not a database"):
        build("sqlite", {"path": str(database.parent / "notes.db")}, {}, settings).test()
    get_settings.cache_clear()


def test_no_roots(database: Path) -> None:
    with pytest.raises(InvalidInput, match="data.file_roots"):
        build("sqlite", {"path": str(database)}, {}, get_settings()).test()
