"""Versioned datasets through the SDK, on a local directory and on an S3 server, on SQLite and PostgreSQL.

Every write is one Delta commit and one version; a refused write (schema, contract, quota)
commits nothing; history, time travel, schema and storage accounting follow the commits.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.data.objectstore import LocalObjectStore, dataset_prefix
from selfserve.errors import InvalidInput, NotFound, QuotaExceeded
from tests.support import Platform, upload_table

PROJECT = "sales"


def delta_versions(platform: Platform, project: str, name: str) -> list[int]:
    """The versions in the dataset's Delta log: its commit files, listed in storage (not the platform's DB).

    Listed with the storage's own API: some deltalake calls hold the GIL while they wait for the
    network, which would starve the in-process moto server.
    """
    store = platform.app.state.object_store
    log = f"{dataset_prefix(project, name)}/_delta_log"
    if isinstance(store, LocalObjectStore):
        names = [p.name for p in (store.root / log).glob("*.json")]
    else:
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(log) + "/")
        names = [o["Key"].rsplit("/", 1)[1] for page in pages for o in page.get("Contents", [])]
    return sorted(int(n.split(".")[0]) for n in names if n.endswith(".json") and n.split(".")[0].isdigit())


def has_delta_log(platform: Platform, project: str, name: str) -> bool:
    return delta_versions(platform, project, name) != []


def storage_usage(client: Client, project: str) -> float:
    return next(i.amount for i in client.quotas.usage(project).items if i.resource == "storage")


def rows(n: int, start: int = 0, **extra: list[Any]) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "amount": [float(i) * 1.5 for i in range(n)], **extra})


@pytest.fixture
def owner(data_platform: Platform) -> Client:
    admin = data_platform.admin()
    alice = data_platform.user("alice", admin_client=admin)
    alice.projects.create(PROJECT)
    return alice


def test_first_write_creates_the_dataset_and_each_write_is_one_version(
    data_platform: Platform, owner: Client, tmp_path: Path
) -> None:
    assert owner.datasets.list(PROJECT) == []
    v0 = upload_table(owner, PROJECT, "orders", rows(3), tmp_path)
    assert (v0.version, v0.operation, v0.rows, v0.rows_written) == (0, "create", 3, 3)
    assert delta_versions(data_platform, PROJECT, "orders") == [0]

    v1 = upload_table(owner, PROJECT, "orders", rows(2, start=3), tmp_path)
    assert (v1.version, v1.operation, v1.rows, v1.rows_written) == (1, "append", 5, 2)
    assert delta_versions(data_platform, PROJECT, "orders") == [0, 1]

    [ds] = owner.datasets.list(PROJECT)
    assert (ds.name, ds.current_version, ds.rows, ds.created_by) == ("orders", 1, 5, "alice")
    assert ds.storage_bytes > 0 and ds.bytes and ds.bytes > 0
    history = owner.datasets.history(PROJECT, "orders")
    assert [h.version for h in history] == [1, 0]
    assert [h.rows for h in history] == [5, 3]
    assert all(h.bytes > 0 for h in history)
    assert history[0].bytes > history[1].bytes
    assert [c.name for c in history[0].columns] == ["id", "amount"]
    assert all(h.producer["kind"] == "upload" and h.producer["file"].endswith(".parquet") for h in history)
    assert all(h.inputs == [] and h.created_by == "alice" for h in history)


def test_preview_reads_a_version_and_travels_in_time(owner: Client, tmp_path: Path) -> None:
    before_first = datetime.now(UTC) - timedelta(seconds=5)
    upload_table(owner, PROJECT, "orders", rows(3), tmp_path)
    time.sleep(0.05)  # commit times are kept in milliseconds
    between = datetime.now(UTC)
    time.sleep(0.05)
    upload_table(owner, PROJECT, "orders", rows(2, start=3), tmp_path)

    latest = owner.datasets.preview(PROJECT, "orders", limit=100)
    assert sorted(r[0] for r in latest.rows) == [0, 1, 2, 3, 4]
    v0 = owner.datasets.preview(PROJECT, "orders", version=0, limit=100)
    assert sorted(r[0] for r in v0.rows) == [0, 1, 2]
    assert [c.name for c in v0.columns] == ["id", "amount"]
    then = owner.datasets.preview(PROJECT, "orders", as_of=between.isoformat(), limit=100)
    assert sorted(r[0] for r in then.rows) == [0, 1, 2]
    same = owner.datasets.preview(PROJECT, "orders", as_of=between, limit=100)  # a datetime works too
    assert same == then
    naive_utc = between.replace(tzinfo=None)  # a time without a zone is UTC
    assert owner.datasets.preview(PROJECT, "orders", as_of=naive_utc.isoformat(), limit=100) == then
    now = owner.datasets.preview(PROJECT, "orders", as_of=datetime.now(UTC).isoformat(), limit=100)
    assert sorted(r[0] for r in now.rows) == [0, 1, 2, 3, 4]

    cut = owner.datasets.preview(PROJECT, "orders", limit=2)
    assert cut.row_count == 2 and cut.truncated
    whole = owner.datasets.preview(PROJECT, "orders", limit=5)
    assert whole.row_count == 5 and not whole.truncated

    with pytest.raises(NotFound, match="no data at") as e:
        owner.datasets.preview(PROJECT, "orders", as_of=before_first.isoformat())
    assert "orders" in e.value.message
    with pytest.raises(NotFound, match="orders"):
        owner.datasets.preview(PROJECT, "orders", version=7)


def test_schema_of_each_version(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "orders", rows(2), tmp_path)
    upload_table(owner, PROJECT, "orders", rows(2, start=2, region=["eu", "us"]), tmp_path, evolve=True)
    latest = owner.datasets.schema(PROJECT, "orders")
    assert [(c.name, c.type) for c in latest] == [("id", "long"), ("amount", "double"), ("region", "string")]
    first = owner.datasets.schema(PROJECT, "orders", version=0)
    assert [(c.name, c.type) for c in first] == [("id", "long"), ("amount", "double")]
    with pytest.raises(NotFound, match="no version 5"):
        owner.datasets.schema(PROJECT, "orders", version=5)


def test_an_append_with_another_schema_is_refused_and_commits_nothing(
    data_platform: Platform, owner: Client, tmp_path: Path
) -> None:
    upload_table(owner, PROJECT, "orders", rows(3), tmp_path)
    other = pa.table({"id": ["a", "b"], "region": ["eu", "us"]})
    with pytest.raises(InvalidInput) as e:
        upload_table(owner, PROJECT, "orders", other, tmp_path)
    message = e.value.message
    assert "'region'" in message and "'amount'" in message and "'id'" in message and "evolve" in message
    assert len(e.value.detail["differences"]) == 3
    assert [h.version for h in owner.datasets.history(PROJECT, "orders")] == [0]
    assert delta_versions(data_platform, PROJECT, "orders") == [0]
    assert owner.datasets.get(PROJECT, "orders").rows == 3


def test_an_append_with_a_new_column_is_accepted_with_evolve(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "orders", rows(2), tmp_path)
    with pytest.raises(InvalidInput, match="new column 'region'"):
        upload_table(owner, PROJECT, "orders", rows(1, start=2, region=["eu"]), tmp_path)
    v1 = upload_table(owner, PROJECT, "orders", rows(1, start=2, region=["eu"]), tmp_path, evolve=True)
    assert (v1.version, v1.rows) == (1, 3)
    data = owner.datasets.preview(PROJECT, "orders", limit=10)
    assert [c.name for c in data.columns] == ["id", "amount", "region"]
    by_id = {r[0]: r[2] for r in data.rows}
    assert by_id == {0: None, 1: None, 2: "eu"}


def test_overwrite_replaces_the_rows_and_keeps_the_old_version(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "orders", rows(5), tmp_path)
    v1 = upload_table(owner, PROJECT, "orders", pa.table({"sku": ["x"]}), tmp_path, mode="overwrite", evolve=True)
    assert (v1.version, v1.operation, v1.rows, v1.rows_written) == (1, "overwrite", 1, 1)
    assert owner.datasets.preview(PROJECT, "orders").rows == [["x"]]
    assert owner.datasets.preview(PROJECT, "orders", version=0, limit=10).row_count == 5
    same_schema = upload_table(owner, PROJECT, "orders", pa.table({"sku": ["y", "z"]}), tmp_path, mode="overwrite")
    assert (same_schema.version, same_schema.rows) == (2, 2)


def test_delete_frees_the_storage_it_used(data_platform: Platform, owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "orders", rows(50), tmp_path)
    upload_table(owner, PROJECT, "keep", rows(5), tmp_path)
    orders = owner.datasets.get(PROJECT, "orders")
    keep = owner.datasets.get(PROJECT, "keep")
    store = data_platform.app.state.object_store
    assert storage_usage(owner, PROJECT) == orders.storage_bytes + keep.storage_bytes
    assert store.size_of(dataset_prefix(PROJECT, "orders")) == orders.storage_bytes

    owner.datasets.delete(PROJECT, "orders")
    assert storage_usage(owner, PROJECT) == keep.storage_bytes
    assert store.size_of(dataset_prefix(PROJECT, "orders")) == 0
    with pytest.raises(NotFound):
        owner.datasets.get(PROJECT, "orders")
    with pytest.raises(NotFound):
        owner.datasets.delete(PROJECT, "orders")
    assert [d.name for d in owner.datasets.list(PROJECT)] == ["keep"]
    # The name is free again and starts over at version 0.
    assert upload_table(owner, PROJECT, "orders", rows(1), tmp_path).version == 0


def test_a_write_over_the_storage_quota_is_refused_and_commits_nothing(
    data_platform: Platform, owner: Client, tmp_path: Path
) -> None:
    admin = data_platform.admin()
    upload_table(owner, PROJECT, "orders", rows(10), tmp_path)
    used = storage_usage(owner, PROJECT)
    admin.quotas.set(PROJECT, {"storage": int(used) + 1000})
    big = rows(20_000)
    with pytest.raises(QuotaExceeded) as e:
        upload_table(owner, PROJECT, "orders", big, tmp_path)
    assert "storage quota" in e.value.message and PROJECT in e.value.message
    assert e.value.detail["resource"] == "storage" and e.value.detail["limit"] == int(used) + 1000
    assert [h.version for h in owner.datasets.history(PROJECT, "orders")] == [0]
    assert delta_versions(data_platform, PROJECT, "orders") == [0]
    assert storage_usage(owner, PROJECT) == used

    with pytest.raises(QuotaExceeded, match="storage quota"):
        upload_table(owner, PROJECT, "fresh", big, tmp_path)
    with pytest.raises(NotFound):
        owner.datasets.get(PROJECT, "fresh")
    assert not has_delta_log(data_platform, PROJECT, "fresh")

    upload_table(owner, PROJECT, "orders", rows(1), tmp_path)  # a small write still fits


def test_quota_show_reports_the_storage_in_use(owner: Client, tmp_path: Path) -> None:
    def storage_item() -> Any:
        return next(i for i in owner.quotas.get(PROJECT).items if i.resource == "storage")

    assert storage_item().usage in (None, 0)
    upload_table(owner, PROJECT, "orders", rows(100), tmp_path)
    upload_table(owner, PROJECT, "orders", rows(100), tmp_path)
    total = owner.datasets.get(PROJECT, "orders").storage_bytes
    item = storage_item()
    assert item.usage == total > 0
    assert "/" in item.shown


def test_concurrent_appends_from_threads_lose_nothing(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "events", rows(1), tmp_path)
    threads, per_thread, errors = 3, 4, []

    def append(t: int) -> None:
        try:
            for i in range(per_thread):
                upload_table(owner, PROJECT, "events", rows(2, start=1000 * (t + 1) + 10 * i), tmp_path / str(t))
        except Exception as e:  # collected and reported below
            errors.append(e)

    workers = [threading.Thread(target=append, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    writes = threads * per_thread
    history = owner.datasets.history(PROJECT, "events")
    assert sorted(h.version for h in history) == list(range(writes + 1))
    ds = owner.datasets.get(PROJECT, "events")
    assert (ds.current_version, ds.rows) == (writes, 1 + 2 * writes)
    ids = [r[0] for r in owner.datasets.query(PROJECT, "SELECT id FROM events ORDER BY id", limit=1000).rows]
    assert len(ids) == len(set(ids)) == 1 + 2 * writes
    assert storage_usage(owner, PROJECT) == ds.storage_bytes


def test_concurrent_first_writes_create_one_dataset(owner: Client, tmp_path: Path) -> None:
    errors: list[Exception] = []

    def write(t: int) -> None:
        try:
            upload_table(owner, PROJECT, "fresh", rows(1, start=t), tmp_path / str(t))
        except Exception as e:  # collected and reported below
            errors.append(e)

    workers = [threading.Thread(target=write, args=(t,)) for t in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    assert sorted(h.version for h in owner.datasets.history(PROJECT, "fresh")) == [0, 1, 2]
    assert owner.datasets.get(PROJECT, "fresh").rows == 3


def test_a_reader_never_sees_half_a_write(owner: Client, tmp_path: Path) -> None:
    batch = 500
    upload_table(owner, PROJECT, "events", pa.table({"batch": [0] * batch, "n": list(range(batch))}), tmp_path)
    done = threading.Event()
    seen: list[dict[int, int]] = []
    errors: list[Exception] = []

    def read() -> None:
        try:
            while not done.is_set():
                result = owner.datasets.query(PROJECT, "SELECT batch, count(*) AS n FROM events GROUP BY batch")
                seen.append({r[0]: r[1] for r in result.rows})
        except Exception as e:  # collected and reported below
            errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for b in range(1, 6):
            table = pa.table({"batch": [b] * batch, "n": list(range(batch))})
            upload_table(owner, PROJECT, "events", table, tmp_path)
    finally:
        done.set()
        reader.join(60)
    assert errors == []
    assert len(seen) >= 2
    for counts in seen:
        assert set(counts) == set(range(len(counts))), counts
        assert set(counts.values()) == {batch}, counts


def test_bad_names_versions_and_times(owner: Client, tmp_path: Path) -> None:
    upload_table(owner, PROJECT, "orders", rows(1), tmp_path)
    with pytest.raises(InvalidInput, match="cannot contain '/'"):
        owner.datasets.get(PROJECT, "../x")
    with pytest.raises(InvalidInput, match="cannot contain '/'"):
        upload_table(owner, PROJECT, "../x", rows(1), tmp_path)
    with pytest.raises(InvalidInput, match="cannot contain '/'"):
        owner.datasets.delete(PROJECT, "orders/contract")
    # A dot segment reaches the server as a name (and is refused there), not as "the parent path".
    for dots in (".", ".."):
        with pytest.raises(InvalidInput, match="path.name"):
            owner.datasets.delete(PROJECT, dots)
        with pytest.raises(InvalidInput, match="path.name"):
            owner.datasets.preview(PROJECT, dots)
    assert owner.projects.get(PROJECT).name == PROJECT
    assert owner.datasets.get(PROJECT, "orders").current_version == 0
    with pytest.raises(InvalidInput, match="name"):
        owner.datasets.transform(PROJECT, "../x", sql="SELECT * FROM orders")
    with pytest.raises(InvalidInput):
        owner.datasets.transform(PROJECT, "Orders", sql="SELECT * FROM orders")
    with pytest.raises(NotFound, match="no version 3"):
        owner.datasets.schema(PROJECT, "orders", version=3)
    with pytest.raises(NotFound, match="version 3"):
        owner.datasets.preview(PROJECT, "orders", version=3)
    with pytest.raises(NotFound, match="no data at time"):
        owner.datasets.preview(PROJECT, "orders", as_of="2001-01-01T00:00:00+00:00")
    with pytest.raises(InvalidInput, match="version or as_of"):
        owner.datasets.preview(PROJECT, "orders", version=0, as_of="2001-01-01T00:00:00+00:00")
    with pytest.raises(InvalidInput):
        owner.datasets.preview(PROJECT, "orders", version=-1)
    with pytest.raises(NotFound):
        owner.datasets.preview(PROJECT, "nope")
    with pytest.raises(InvalidInput, match="preview maximum"):
        owner.datasets.preview(PROJECT, "orders", limit=5000)


def test_names_in_raw_paths_never_reach_another_route(sqlite_platform: Platform) -> None:
    """Without the SDK: an encoded dot segment is a bad name (422); an encoded '/' is no route (404)."""
    import httpx

    owner = sqlite_platform.user("alice")
    owner.projects.create(PROJECT)
    api = httpx.Client(base_url="http://selfserve.test/api/v1", transport=sqlite_platform.transport)
    headers = {"Authorization": f"Bearer {owner.token}"}
    for method in ("GET", "DELETE"):
        for seg in ("%2E%2E", "%2e", "..x", "X"):
            resp = api.request(method, f"/projects/{PROJECT}/datasets/{seg}", headers=headers)
            assert resp.status_code == 422 and "path.name" in resp.json()["error"]["message"], (seg, resp.text)
        resp = api.request(method, f"/projects/{PROJECT}/datasets/..%2Fx", headers=headers)
        assert resp.status_code == 404 and "no such endpoint" in resp.json()["error"]["message"]
    body = {"to": "../x", "sql": "SELECT 1 AS x"}
    resp = api.post(f"/projects/{PROJECT}/transforms", headers=headers, json=body)
    assert resp.status_code == 422 and "to: invalid name '../x'" in resp.json()["error"]["message"]
    assert owner.projects.get(PROJECT).name == PROJECT
    api.close()
