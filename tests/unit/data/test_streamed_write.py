"""A write given record batches writes them while they are read, in a background thread, and commits
them as one version; on a local directory and on S3.

Checked here: the files, statistics and version of a streamed write match a whole-table write of the
same rows; the read overlaps the write; a failure at any point (the source, the quota, the columns)
commits nothing, leaves no files and no thread behind; ingest settles its source only after the commit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from selfserve.data import datasets, ingest, sources
from selfserve.data.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore, dataset_prefix
from selfserve.errors import InvalidInput, QuotaExceeded
from selfserve.policy import quotas
from selfserve.policy.projects import require_project
from selfserve.schemas.data import IngestRequest
from selfserve.settings import get_settings
from tests.support import Platform

STORE_INDEPENDENT = True

PROJECT = "sales"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])


@pytest.fixture
def plat(data_platform: Platform) -> Iterator[Platform]:
    data_platform.admin().projects.create(PROJECT)
    yield data_platform


def readers() -> list[threading.Thread]:
    """The threads reading the input of a write."""
    return [t for t in threading.enumerate() if t.name == "selfserve-read-ahead"]


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """No thread started during the test runs after it (but those of the S3 test server, which
    answers each connection in a thread of its own)."""
    before = set(threading.enumerate())
    count = threading.active_count()
    yield
    assert readers() == []
    left = [t for t in threading.enumerate() if t not in before and "process_request_thread" not in t.name]
    assert left == []
    if not any("process_request_thread" in t.name for t in before | set(threading.enumerate())):
        assert threading.active_count() == count


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 4 rows in row groups of 2, so that a few rows make several files."""
    monkeypatch.setattr(datasets, "_FILE_ROWS", 4)
    monkeypatch.setattr(datasets, "_ROW_GROUP_ROWS", 2)


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The files each failed write removed (a write that wrote none removes none)."""
    calls: list[list[str]] = []
    real = datasets._remove_files

    def spy(store: ObjectStore, prefix: str, files: list[str]) -> None:
        calls.append(list(files))
        real(store, prefix, files)

    monkeypatch.setattr(datasets, "_remove_files", spy)
    return calls


def store_of(platform: Platform) -> ObjectStore:
    store: ObjectStore = platform.app.state.object_store
    return store


def batch(start: int, n: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.record_batch([ids, [f"n{i}" for i in ids], [i * 1.5 for i in ids]], schema=SCHEMA)


def write(platform: Platform, name: str, data: Any, **kwargs: Any) -> datasets.DatasetVersion:
    with platform.store.begin() as session:
        proj = require_project(session, PROJECT)
        return datasets.write(session, store_of(platform), proj, name, data, actor="admin", **kwargs)


def keys(platform: Platform, name: str) -> list[str]:
    """Every object under the dataset's prefix, relative to it, listed with the storage's own API."""
    store = store_of(platform)
    prefix = dataset_prefix(PROJECT, name)
    if isinstance(store, LocalObjectStore):
        base = store.path(prefix)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []
    assert isinstance(store, S3ObjectStore)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(prefix) + "/")
    cut = len(store.key(prefix)) + 1
    return sorted(o["Key"][cut:] for page in pages for o in page.get("Contents", []))


def data_files(platform: Platform, name: str) -> list[str]:
    return [k for k in keys(platform, name) if k.endswith(".parquet") and "/" not in k]


def log_adds(platform: Platform, name: str, version: int) -> list[dict[str, Any]]:
    raw = store_of(platform).get_bytes(f"{dataset_prefix(PROJECT, name)}/_delta_log/{version:020d}.json")
    return [json.loads(line)["add"] for line in raw.splitlines() if b'"add"' in line]


def versions(platform: Platform, name: str) -> list[int]:
    return sorted(int(k.split("/")[1].split(".")[0]) for k in keys(platform, name) if k.endswith(".json"))


def dataset_state(platform: Platform, name: str) -> tuple[int | None, int] | None:
    """The dataset's current version and recorded storage bytes (None: no such dataset)."""
    with platform.store.begin() as session:
        ds = datasets.find(session, require_project(session, PROJECT), name)
        return None if ds is None else (ds.current_version, ds.storage_bytes)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_batches_are_one_version_with_the_files_and_statistics_of_a_table(
    plat: Platform, small_files: None, no_thread_left: None
) -> None:
    parts = [batch(0, 3), batch(3, 3), batch(6, 0), batch(6, 3), batch(9, 1)]
    reading: set[str] = set()

    def produce() -> Iterator[pa.RecordBatch]:
        for part in parts:
            reading.add(threading.current_thread().name)
            yield part

    row = write(plat, "streamed", produce(), description="streamed")
    assert readers() == []
    assert (row.version, row.rows, row.rows_written, row.operation) == (0, 10, 10, "create")
    assert reading == {"selfserve-read-ahead"}  # read in the background, not by the writing thread
    assert versions(plat, "streamed") == [0]
    write(plat, "whole", pa.Table.from_batches(parts))

    streamed, whole = log_adds(plat, "streamed", 0), log_adds(plat, "whole", 0)
    assert [json.loads(a["stats"]) for a in streamed] == [json.loads(a["stats"]) for a in whole]
    assert [json.loads(a["stats"])["numRecords"] for a in streamed] == [4, 4, 2]
    assert json.loads(streamed[0]["stats"])["minValues"] == {"id": 0, "name": "n0", "amount": 0.0}
    assert json.loads(streamed[2]["stats"])["maxValues"] == {"id": 9, "name": "n9", "amount": 13.5}
    assert [a["path"].split("-")[1] for a in streamed] == ["00000", "00001", "00002"]
    assert sorted(a["path"] for a in streamed) == data_files(plat, "streamed")
    assert all(a["path"].endswith("-c000.snappy.parquet") and a["dataChange"] for a in streamed)
    prefix = dataset_prefix(PROJECT, "streamed")
    assert [a["size"] for a in streamed] == [len(store_of(plat).get_bytes(f"{prefix}/{a['path']}")) for a in streamed]

    back = datasets.read(store_of(plat), PROJECT, "streamed")
    assert sorted(back.to_pylist(), key=lambda r: r["id"]) == pa.Table.from_batches(parts).to_pylist()
    with plat.store.begin() as session:
        ds = datasets.get(session, require_project(session, PROJECT), "streamed")
        assert ds.current_version == 0 and ds.description == "streamed"
        assert ds.storage_bytes == store_of(plat).size_of(dataset_prefix(PROJECT, "streamed"))
        assert quotas.usage(session, require_project(session, PROJECT))["storage"] == ds.storage_bytes + (
            datasets.get(session, require_project(session, PROJECT), "whole").storage_bytes
        )

    # Appends and overwrites of the same columns stream too, each one commit.
    assert write(plat, "streamed", iter([batch(10, 3), batch(13, 3)])).rows == 16
    assert write(plat, "streamed", iter([batch(100, 2)]), mode="overwrite").rows == 2
    assert versions(plat, "streamed") == [0, 1, 2]
    assert datasets.read(store_of(plat), PROJECT, "streamed").column("id").to_pylist() == [100, 101]


def test_the_write_overlaps_the_read(plat: Platform, small_files: None, no_thread_left: None) -> None:
    seen_before_the_end: list[bool] = []

    def produce() -> Iterator[pa.RecordBatch]:
        yield batch(0, 3)
        yield batch(3, 3)
        # The first file (4 rows) is written while the source has more to give.
        seen_before_the_end.append(wait_for(lambda: bool(data_files(plat, "events"))))
        yield batch(6, 3)

    assert write(plat, "events", produce()).rows == 9
    assert seen_before_the_end == [True]


def test_batches_are_normalised_as_a_table_is(plat: Platform, no_thread_left: None) -> None:
    at = pa.timestamp("ns", tz="Europe/Lisbon")
    schema = pa.schema([("n", pa.uint32()), ("at", at), ("x", pa.null())])
    parts = [
        pa.record_batch(
            [pa.array([i], pa.uint32()), pa.array([1_700_000_000_123_456_789 + i], at), pa.nulls(1)], schema
        )
        for i in range(3)
    ]
    write(plat, "streamed", iter(parts))
    write(plat, "whole", pa.Table.from_batches(parts))
    streamed = datasets.read(store_of(plat), PROJECT, "streamed")
    assert streamed.schema == datasets.read(store_of(plat), PROJECT, "whole").schema
    assert streamed.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert sorted(streamed.column("n").to_pylist()) == [0, 1, 2]


def test_an_error_of_the_source_mid_stream_commits_nothing_and_leaves_no_files(
    plat: Platform, small_files: None, removed: list[list[str]], no_thread_left: None
) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    before = keys(plat, "orders")
    state = dataset_state(plat, "orders")

    def produce(name: str, had: int) -> Iterator[pa.RecordBatch]:
        yield batch(10, 3)
        yield batch(13, 3)
        assert wait_for(lambda: len(data_files(plat, name)) > had)  # the write has files of its own by now
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="the source went away"):
        write(plat, "orders", produce("orders", 1))
    assert readers() == []
    assert [len(files) for files in removed] == [2]  # it had written two files, and removed them
    assert keys(plat, "orders") == before
    assert dataset_state(plat, "orders") == state
    assert datasets.read(store_of(plat), PROJECT, "orders").column("id").to_pylist() == [0, 1]

    # A first write that fails creates no dataset.
    with pytest.raises(RuntimeError, match="the source went away"):
        write(plat, "fresh", produce("fresh", 0))
    assert data_files(plat, "fresh") == [] and versions(plat, "fresh") == []
    assert dataset_state(plat, "fresh") is None


def test_a_write_over_the_quota_mid_stream_commits_nothing_and_stops_the_source(
    plat: Platform, small_files: None, removed: list[list[str]], no_thread_left: None
) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    before = keys(plat, "orders")
    state = dataset_state(plat, "orders")
    size = batch(10, 3).nbytes  # as each of the next batches: ids of two digits
    with plat.store.begin() as session:
        proj = require_project(session, PROJECT)
        used = quotas.usage(session, proj)["storage"]
        quotas.set_limits(session, proj, {"storage": used + 2.5 * size})  # two batches fit, not three
    taken: list[int] = []
    closed: list[bool] = []

    def produce() -> Iterator[pa.RecordBatch]:
        try:
            for i in range(1000):
                taken.append(i)
                yield batch(10 + 3 * i, 3)
        finally:
            closed.append(True)

    with pytest.raises(QuotaExceeded, match="storage quota exceeded") as e:
        write(plat, "orders", produce())
    assert readers() == [] and closed == [True]  # the source was stopped before the write returned
    assert e.value.detail["requested"] == 3 * size
    assert [len(files) for files in removed] == [2]  # 6 rows were written, in two files, then removed
    assert keys(plat, "orders") == before
    assert dataset_state(plat, "orders") == state
    assert len(taken) < 10  # read a few batches ahead only, then stopped
    with plat.store.begin() as session:
        assert quotas.usage(session, require_project(session, PROJECT))["storage"] == used

    assert write(plat, "orders", iter([batch(2, 3), batch(5, 1)])).rows == 6  # what fits still goes


def test_an_append_with_other_columns_is_refused_before_anything_is_written(
    plat: Platform, removed: list[list[str]], no_thread_left: None
) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    before = keys(plat, "orders")
    other = pa.record_batch([[1], ["x"]], names=["id", "region"])
    with pytest.raises(InvalidInput) as whole:
        write(plat, "orders", pa.Table.from_batches([other]))
    with pytest.raises(InvalidInput) as streamed:
        write(plat, "orders", iter([other, other]))
    assert streamed.value.message == whole.value.message
    assert "schema of dataset 'orders' differs" in streamed.value.message and "--evolve" in streamed.value.message
    assert streamed.value.detail == whole.value.detail
    assert removed == [] and keys(plat, "orders") == before

    # With evolve the new column is added (the whole-table path).
    assert write(plat, "orders", iter([other]), evolve=True).version == 1


def test_an_overwrite_with_other_columns_needs_evolve_as_a_table_does(plat: Platform, no_thread_left: None) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    other = pa.record_batch([[1], ["x"]], names=["id", "region"])
    with pytest.raises(InvalidInput, match="evolve"):
        write(plat, "orders", iter([other, other]), mode="overwrite")
    assert versions(plat, "orders") == [0]
    assert write(plat, "orders", iter([other, other]), mode="overwrite", evolve=True).rows == 2


def test_a_later_batch_with_other_columns_is_refused(
    plat: Platform, small_files: None, removed: list[list[str]], no_thread_left: None
) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    before = keys(plat, "orders")
    text_ids = pa.record_batch(
        [["a"], ["n"], [1.0]], schema=pa.schema([(f.name, pa.string()) if f.name == "id" else f for f in SCHEMA])
    )
    with pytest.raises(InvalidInput, match="batch 3 of the input has other columns than the first") as e:
        write(plat, "orders", iter([batch(10, 3), batch(13, 3), text_ids]))
    assert readers() == []
    assert e.value.detail == {"differences": ["column 'id' is string, was int64"]}
    assert [len(files) for files in removed] == [2]
    assert keys(plat, "orders") == before

    renamed = batch(20, 1).rename_columns(["id", "label", "amount"])
    with pytest.raises(InvalidInput, match="batch 2 .*new column 'label'"):
        write(plat, "fresh", iter([batch(10, 1), renamed]))
    assert dataset_state(plat, "fresh") is None and data_files(plat, "fresh") == []


def test_empty_input_is_refused_as_for_a_table(plat: Platform, no_thread_left: None) -> None:
    with pytest.raises(InvalidInput) as whole:
        datasets.to_table([])
    with pytest.raises(InvalidInput) as streamed:
        write(plat, "orders", iter([]))
    assert streamed.value.message == whole.value.message == "no rows and no columns to write: the input is empty"

    def nothing() -> Iterator[pa.RecordBatch]:
        yield from ()

    with pytest.raises(InvalidInput, match="the input is empty"):
        write(plat, "orders", nothing())
    with pytest.raises(InvalidInput, match="the input has no columns"):
        write(plat, "orders", iter([pa.RecordBatch.from_pydict({}), pa.RecordBatch.from_pydict({})]))
    assert dataset_state(plat, "orders") is None and keys(plat, "orders") == []

    # Batches without rows but with columns are a version without rows, as an empty table is.
    row = write(plat, "orders", iter([batch(0, 0), batch(0, 0)]))
    assert (row.version, row.rows, row.rows_written) == (0, 0, 0)
    [add] = log_adds(plat, "orders", 0)
    assert json.loads(add["stats"]) == {"numRecords": 0, "minValues": {}, "maxValues": {}, "nullCount": {}}
    assert datasets.read(store_of(plat), PROJECT, "orders").column_names == ["id", "name", "amount"]


def test_a_dataset_with_a_contract_sees_every_row_before_the_commit(plat: Platform, no_thread_left: None) -> None:
    write(plat, "orders", iter([batch(0, 2)]))
    with plat.store.begin() as session:
        ds = datasets.get(session, require_project(session, PROJECT), "orders")
        ds.contract = "columns:\n  id: {unique: true}\n"
    reading: set[str] = set()

    def produce() -> Iterator[pa.RecordBatch]:
        reading.add(threading.current_thread().name)
        yield batch(10, 3)
        yield batch(1, 1)  # a duplicate of an id already in the dataset, in the last batch

    with pytest.raises(InvalidInput, match="contract"):
        write(plat, "orders", produce())
    assert reading == {threading.current_thread().name}  # read whole, before anything is written
    assert versions(plat, "orders") == [0]


# -- ingest ---------------------------------------------------------------------------------


class Recorded:
    """A SQLite source's connector that records its settlements and can fail after some batches."""

    def __init__(self, real: Any, platform: Platform, fail_after: int | None) -> None:
        self.real = real
        self.platform = platform
        self.fail_after = fail_after
        self.calls: list[tuple[str, list[int]]] = []
        self.threads: set[str] = set()
        self.cursor_ordered = getattr(real, "cursor_ordered", False)

    def read(self, request: Any) -> Iterator[pa.RecordBatch]:
        for i, part in enumerate(self.real.read(request)):
            self.threads.add(threading.current_thread().name)
            if self.fail_after is not None and i == self.fail_after:
                raise InvalidInput("the source broke")
            yield part

    def commit(self) -> None:
        self.calls.append(("commit", versions(self.platform, "events")))
        self.real.commit()

    def rollback(self) -> None:
        self.calls.append(("rollback", versions(self.platform, "events")))
        self.real.rollback()


CONNECTOR_FOR = sources.connector_for


@pytest.fixture
def shop(plat: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    db = root / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (id INTEGER, kind TEXT)")
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, "click") for i in range(1, 8)])
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(root)]))
    get_settings.cache_clear()
    plat.admin().sources.add(PROJECT, "shop", "sqlite", {"path": str(db)})
    return db


def run_ingest(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None, **request: Any
) -> tuple[Recorded, Any, list[dict[str, Any]]]:
    made: list[Recorded] = []

    def recorded(src: Any) -> Recorded:
        made.append(Recorded(CONNECTOR_FOR(src), platform, fail_after))
        return made[-1]

    monkeypatch.setattr(sources, "connector_for", recorded)
    progress: list[dict[str, Any]] = []
    result: Any
    req = IngestRequest(source="shop", to="events", batch_rows=2, **{"table": "events", **request})
    try:
        with platform.store.begin() as session:
            proj = require_project(session, PROJECT)
            row = ingest.ingest(session, store_of(platform), proj, req, actor="admin", progress=progress.append)
            result = (row.version, row.rows_written)
    except BaseException as e:
        result = e
    return made[0], result, progress


def test_an_ingest_streams_and_settles_its_source_after_the_commit(
    plat: Platform, shop: Path, monkeypatch: pytest.MonkeyPatch, no_thread_left: None
) -> None:
    connector, result, progress = run_ingest(plat, monkeypatch, incremental="id")
    assert result == (0, 7)
    assert connector.threads == {"selfserve-read-ahead"}
    assert connector.calls == [("commit", [0])]  # settled once version 0 was in the log
    assert [p["rows_read"] for p in progress] == [2, 4, 6, 7]
    with sqlite3.connect(shop) as conn:
        conn.execute("INSERT INTO events VALUES (8, 'view')")
    connector, result, _ = run_ingest(plat, monkeypatch, incremental="id")
    assert result == (1, 1)  # the watermark was stored after the commit: only the new row
    connector, result, _ = run_ingest(plat, monkeypatch, incremental="id")
    assert isinstance(result, InvalidInput) and "no new rows in 'shop' since id = 8" in result.message
    assert connector.calls == [("rollback", [0, 1])]


def test_an_ingest_whose_source_fails_mid_read_commits_nothing_and_hands_back(
    plat: Platform, shop: Path, monkeypatch: pytest.MonkeyPatch, small_files: None, no_thread_left: None
) -> None:
    connector, result, progress = run_ingest(plat, monkeypatch, fail_after=3, incremental="id")
    assert isinstance(result, InvalidInput) and result.message == "the source broke"
    assert connector.calls == [("rollback", [])]
    assert [p["rows_read"] for p in progress] == [2, 4, 6]
    assert keys(plat, "events") == [] and dataset_state(plat, "events") is None
    # No watermark was kept: the next load reads everything.
    connector, result, _ = run_ingest(plat, monkeypatch, incremental="id")
    assert result == (0, 7)


def test_an_ingest_of_an_empty_source_is_refused(
    plat: Platform, shop: Path, monkeypatch: pytest.MonkeyPatch, no_thread_left: None
) -> None:
    connector, result, _ = run_ingest(plat, monkeypatch, table=None, query="SELECT * FROM events WHERE id > 100")
    assert isinstance(result, InvalidInput) and result.message == "source 'shop' returned no rows"
    assert connector.calls == [("rollback", [])]
    assert dataset_state(plat, "events") is None
