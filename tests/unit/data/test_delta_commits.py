"""How a write reaches the Delta log: Arrow's Parquet writer plus one transaction of add actions with
statistics, or deltalake's own writer where the schema changes; on a local directory and on S3.

Checked here: the statistics in the log (and that deltalake reads them back), overwrite marks the
older files removed, an append with ``evolve``, time travel, the checkpoint interval, and that a
commit that fails leaves no version and no files behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from selfserve.data import datasets
from selfserve.data.objectstore import LocalObjectStore, ObjectStore, dataset_prefix
from selfserve.errors import InvalidInput
from selfserve.policy.projects import require_project
from tests.support import Platform

# Delta commits live in storage; the catalog side is the datasets suite's subject (both DBs).
STORE_INDEPENDENT = True

PROJECT = "sales"


@pytest.fixture
def plat(data_platform: Platform) -> Iterator[Platform]:
    data_platform.admin().projects.create(PROJECT)
    yield data_platform


def store_of(platform: Platform) -> ObjectStore:
    store: ObjectStore = platform.app.state.object_store
    return store


def write(platform: Platform, name: str, table: pa.Table, **kwargs: Any) -> int:
    with platform.store.begin() as session:
        proj = require_project(session, PROJECT)
        row = datasets.write(session, store_of(platform), proj, name, table, actor="admin", **kwargs)
        return row.version


def log_actions(platform: Platform, name: str, version: int) -> list[dict[str, Any]]:
    raw = store_of(platform).get_bytes(f"{dataset_prefix(PROJECT, name)}/_delta_log/{version:020d}.json")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def keys(platform: Platform, name: str) -> list[str]:
    """Every object under the dataset's prefix, relative to it, listed with the storage's own API."""
    store = store_of(platform)
    prefix = dataset_prefix(PROJECT, name)
    if isinstance(store, LocalObjectStore):
        base = store.path(prefix)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(prefix) + "/")
    cut = len(store.key(prefix)) + 1
    return sorted(o["Key"][cut:] for page in pages for o in page.get("Contents", []))


def data_files(platform: Platform, name: str) -> list[str]:
    return [k for k in keys(platform, name) if k.endswith(".parquet") and "/" not in k]


def adds(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a["add"] for a in actions if "add" in a]


def test_a_write_commits_its_files_with_statistics(plat: Platform) -> None:
    table = pa.table(
        {
            "id": pa.array([3, None, 1], pa.int64()),
            "small": pa.array([5, 6, 7], pa.int16()),
            "amount": pa.array([1.5, float("nan"), -2.0]),
            "name": ["b", "a" * 40, None],
            "long": ["z" * 40, "m", "n"],
            "at": pa.array(
                [datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), None, datetime(2023, 1, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": [date(2024, 1, 1), date(2020, 2, 2), None],
            "ok": [True, False, None],
            "price": pa.array([Decimal("1.25"), Decimal("-3.50"), None], pa.decimal128(12, 2)),
            "blob": [b"x", b"y", None],
            "tags": [["a"], [], None],
            "local": pa.array([datetime(2024, 5, 1), None, None], pa.timestamp("us")),
        }
    )
    assert write(plat, "orders", table) == 0
    actions = log_actions(plat, "orders", 0)
    [add] = adds(actions)
    assert next(a for a in actions if "commitInfo" in a)["commitInfo"]["operation"] == "CREATE TABLE"
    assert [add["path"]] == data_files(plat, "orders")
    stats = json.loads(add["stats"])
    assert stats["numRecords"] == 3
    assert stats["nullCount"] == {
        "id": 1,
        "small": 0,
        "amount": 0,
        "name": 1,
        "long": 0,
        "at": 1,
        "day": 1,
        "ok": 1,
        "price": 1,
        "blob": 1,
        "local": 2,
    }  # nothing for the list column
    # NaN is not a bound; long text keeps a prefix as its minimum and has no maximum; timestamps
    # widen to whole milliseconds; binary and zoneless timestamps get no bounds.
    assert stats["minValues"] == {
        "id": 1,
        "small": 5,
        "amount": -2.0,
        "name": "a" * 32,
        "long": "m",
        "at": "2023-01-01T00:00:00.000Z",
        "day": "2020-02-02",
        "ok": False,
        "price": -3.5,
    }
    assert stats["maxValues"] == {
        "id": 3,
        "small": 7,
        "amount": 1.5,
        "name": "b",
        "at": "2024-01-01T12:00:00.124Z",
        "day": "2024-01-01",
        "ok": True,
        "price": 1.25,
    }

    # deltalake reads the statistics back, with their types.
    dt = datasets.open_table(store_of(plat), PROJECT, "orders")
    [row] = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    assert row["num_records"] == 3 and row["null_count.id"] == 1
    assert row["min.at"] == datetime(2023, 1, 1, tzinfo=UTC)
    assert row["max.at"] == datetime(2024, 1, 1, 12, 0, 0, 124000, tzinfo=UTC)
    assert row["min.day"] == date(2020, 2, 2) and row["max.price"] == Decimal("1.25")
    assert dt.protocol().reader_features == ["timestampNtz"]  # the zoneless column needs the feature

    back = datasets.read(store_of(plat), PROJECT, "orders")
    expected = table.cast(back.schema)
    assert back.drop_columns(["amount"]).to_pylist() == expected.drop_columns(["amount"]).to_pylist()
    assert str(back.column("amount").to_pylist()) == "[1.5, nan, -2.0]"


def test_files_are_cut_by_rows_and_timestamps_to_microseconds_in_utc(
    plat: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "_FILE_ROWS", 4)
    monkeypatch.setattr(datasets, "_ROW_GROUP_ROWS", 2)
    nanos = pa.array([1_700_000_000_123_456_789 + i for i in range(10)], pa.timestamp("ns", tz="UTC"))
    lisbon = pa.array([1_700_000_000_000_000 + i for i in range(10)], pa.timestamp("us", tz="Europe/Lisbon"))
    write(plat, "events", pa.table({"n": list(range(10)), "at": nanos, "local": lisbon}))
    files = adds(log_actions(plat, "events", 0))
    assert [json.loads(f["stats"])["numRecords"] for f in files] == [4, 4, 2]
    assert [json.loads(f["stats"])["minValues"]["n"] for f in files] == [0, 4, 8]
    back = datasets.read(store_of(plat), PROJECT, "events")
    assert back.schema.field("at").type == back.schema.field("local").type == pa.timestamp("us", tz="UTC")
    assert sorted(back.column("n").to_pylist()) == list(range(10))
    assert {v.value for v in back.column("at")} == {1_700_000_000_123_456}  # cut, as deltalake does
    assert sorted(v.value for v in back.column("local")) == lisbon.cast(pa.int64()).to_pylist()  # same instants
    # A later append of the same columns in nanoseconds is the same schema.
    write(plat, "events", pa.table({"n": [10], "at": nanos[:1], "local": lisbon[:1]}))


def test_an_overwrite_marks_every_older_file_removed_and_time_travel_still_reads_them(plat: Platform) -> None:
    write(plat, "orders", pa.table({"id": [1, 2]}))
    write(plat, "orders", pa.table({"id": [3]}))
    before = set(data_files(plat, "orders"))
    assert write(plat, "orders", pa.table({"id": [9]}), mode="overwrite") == 2
    actions = log_actions(plat, "orders", 2)
    assert {a["remove"]["path"] for a in actions if "remove" in a} == before
    assert not any("metaData" in a for a in actions)  # same columns: the schema is untouched
    [new] = adds(actions)
    assert json.loads(new["stats"])["numRecords"] == 1
    store = store_of(plat)
    assert datasets.read(store, PROJECT, "orders").column("id").to_pylist() == [9]
    assert sorted(datasets.read(store, PROJECT, "orders", version=1).column("id").to_pylist()) == [1, 2, 3]
    assert datasets.read(store, PROJECT, "orders", version=0).column("id").to_pylist() == [1, 2]
    with plat.store.begin() as session:
        ds = datasets.get(session, require_project(session, PROJECT), "orders")
        [latest] = datasets.versions(session, ds)[:1]
        assert (latest.version, latest.rows, latest.operation) == (2, 1, "overwrite")


def test_an_overwrite_with_new_columns_needs_evolve(plat: Platform) -> None:
    write(plat, "orders", pa.table({"id": [1, 2]}))
    with pytest.raises(InvalidInput, match="evolve"):
        write(plat, "orders", pa.table({"sku": ["x"]}), mode="overwrite")
    assert write(plat, "orders", pa.table({"sku": ["x"]}), mode="overwrite", evolve=True) == 1
    assert datasets.read(store_of(plat), PROJECT, "orders").to_pylist() == [{"sku": "x"}]
    assert datasets.read(store_of(plat), PROJECT, "orders", version=0).num_rows == 2


def test_an_append_with_evolve_adds_the_column_and_later_appends_take_the_fast_path(
    plat: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow: list[str] = []
    real = datasets._commit_with_deltalake

    def counted(*args: Any, **kwargs: Any) -> Any:
        slow.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "_commit_with_deltalake", counted)
    write(plat, "orders", pa.table({"id": [1], "amount": [1.5]}))
    write(plat, "orders", pa.table({"amount": [2.5], "id": [2]}))  # the same columns in another order
    assert slow == []
    write(plat, "orders", pa.table({"id": [3], "amount": [3.5], "region": ["eu"]}), evolve=True)
    assert slow == ["orders"]  # the schema change goes through deltalake's writer
    write(plat, "orders", pa.table({"region": ["us"], "id": [4], "amount": [4.5]}))
    assert slow == ["orders"]
    rows = sorted(datasets.read(store_of(plat), PROJECT, "orders").to_pylist(), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "amount": 1.5, "region": None},
        {"id": 2, "amount": 2.5, "region": None},
        {"id": 3, "amount": 3.5, "region": "eu"},
        {"id": 4, "amount": 4.5, "region": "us"},
    ]
    assert datasets.read(store_of(plat), PROJECT, "orders", version=1).column_names == ["id", "amount"]


def test_a_checkpoint_every_ten_versions(plat: Platform) -> None:
    for i in range(11):
        write(plat, "events", pa.table({"n": [i]}))
    log = [k.split("/")[-1] for k in keys(plat, "events") if "checkpoint.parquet" in k]
    assert log == ["00000000000000000009.checkpoint.parquet"]  # the 10th commit
    assert sorted(datasets.read(store_of(plat), PROJECT, "events").column("n").to_pylist()) == list(range(11))
    assert datasets.read(store_of(plat), PROJECT, "events", version=3).num_rows == 4


def test_a_failed_first_commit_leaves_no_table_and_no_files(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    import deltalake.transaction

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("storage went away")

    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", fail)
    with pytest.raises(OSError, match="went away"):
        write(plat, "orders", pa.table({"id": [1]}))
    assert keys(plat, "orders") == []
    with plat.store.begin() as session:
        assert datasets.find(session, require_project(session, PROJECT), "orders") is None


def test_a_failed_commit_leaves_no_version_and_no_files(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable

    write(plat, "orders", pa.table({"id": [1]}))
    before = keys(plat, "orders")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("storage went away")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", fail)
    for mode in ("append", "overwrite"):
        with pytest.raises(OSError, match="went away"):
            write(plat, "orders", pa.table({"id": [2]}), mode=mode)
    assert keys(plat, "orders") == before
    assert datasets.read(store_of(plat), PROJECT, "orders").column("id").to_pylist() == [1]


def test_a_commit_that_loses_a_race_is_tried_again(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    write(plat, "orders", pa.table({"id": [1]}))
    real = DeltaTable.create_write_transaction
    calls: list[int] = []

    def lose_once(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            write_other()  # another writer commits version 1 first...
            raise CommitFailedError("version 1 already exists")  # ...and this attempt lost
        real(self, *args, **kwargs)

    def write_other() -> None:
        monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
        try:
            write(plat, "orders", pa.table({"id": [2]}))
        finally:
            monkeypatch.setattr(DeltaTable, "create_write_transaction", lose_once)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", lose_once)
    assert write(plat, "orders", pa.table({"id": [3]})) == 2
    assert len(calls) == 2
    assert sorted(datasets.read(store_of(plat), PROJECT, "orders").column("id").to_pylist()) == [1, 2, 3]
    assert len(data_files(plat, "orders")) == 3  # the retried commit reused its file


def test_an_empty_table_is_a_version_with_no_rows(plat: Platform) -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    assert write(plat, "orders", schema.empty_table()) == 0
    [add] = adds(log_actions(plat, "orders", 0))
    assert json.loads(add["stats"]) == {"numRecords": 0, "minValues": {}, "maxValues": {}, "nullCount": {}}
    back = datasets.read(store_of(plat), PROJECT, "orders")
    assert back.num_rows == 0 and back.column_names == ["id", "name"]


def test_nulls_in_a_column_declared_without_them_are_refused(plat: Platform) -> None:
    strict = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    write(plat, "orders", pa.table({"id": [1]}, schema=strict))
    assert write(plat, "orders", pa.table({"id": [2]})) == 1  # a nullable column without nulls fits
    with pytest.raises(InvalidInput, match="'id' has 1 empty values"):
        write(plat, "orders", pa.table({"id": [None, 3]}))
    assert sorted(datasets.read(store_of(plat), PROJECT, "orders").column("id").to_pylist()) == [1, 2]
