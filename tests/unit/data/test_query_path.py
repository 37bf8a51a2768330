"""What a query reuses from the one before: the files of a dataset version (read from the Delta log
once per version), the parsing connection, and the locked-down sandbox itself. Each must follow the
data: a new version, a dataset deleted and created again under its name, a product's new version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.data import datasets, sandbox
from selfserve.data.objectstore import LocalObjectStore
from selfserve.data.sandbox import Sandbox, TableRef, check_sql, tables_in
from selfserve.errors import InvalidInput
from selfserve.policy.projects import require_project
from tests.support import Platform, upload_table

# The query path reads storage through DuckDB; the catalog side is the datasets suite's subject (both DBs).
STORE_INDEPENDENT = True

SECRET_MARK = "hidden-7731"


@pytest.fixture
def alice(data_platform: Platform) -> Client:
    client = data_platform.user("alice")
    client.projects.create("sales")
    return client


@pytest.fixture
def log_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """Every time a query's tables are looked up in a Delta log (dataset, version)."""
    reads: list[tuple[str, int | None]] = []
    real = datasets.open_table

    def counted(store: Any, project: str, name: str, **kwargs: Any) -> Any:
        reads.append((name, kwargs.get("version")))
        return real(store, project, name, **kwargs)

    monkeypatch.setattr(datasets, "open_table", counted)
    return reads


def ids(client: Client, sql: str = "SELECT id FROM orders ORDER BY id") -> list[int]:
    return [r[0] for r in client.datasets.query("sales", sql, limit=1000).rows]


def test_each_version_is_read_from_the_log_once_and_a_new_one_is_seen_at_once(
    alice: Client, tmp_path: Path, log_reads: list[tuple[str, int | None]]
) -> None:
    upload_table(alice, "sales", "orders", pa.table({"id": [1, 2]}), tmp_path)
    assert ids(alice) == [1, 2]
    assert log_reads == []  # the write left its version's files for the first query
    datasets._snapshots.clear()
    assert ids(alice) == [1, 2]
    assert ids(alice, "SELECT count(*) FROM orders") == [2]
    assert log_reads == [("orders", 0)]

    upload_table(alice, "sales", "orders", pa.table({"id": [3]}), tmp_path)
    assert ids(alice) == [1, 2, 3]
    upload_table(alice, "sales", "orders", pa.table({"id": [4]}), tmp_path, mode="overwrite")
    assert ids(alice) == [4]
    assert log_reads == [("orders", 0)]


def test_a_dataset_deleted_and_created_again_is_a_new_table(
    data_platform: Platform, alice: Client, tmp_path: Path
) -> None:
    store = data_platform.app.state.object_store
    upload_table(alice, "sales", "orders", pa.table({"id": [1, 2, 3]}), tmp_path)
    assert ids(alice) == [1, 2, 3]
    with data_platform.store.begin() as session:
        old = datasets.get(session, require_project(session, "sales"), "orders")
        old_id, old_files = old.id, datasets.snapshot(store, "sales", old).files

    alice.datasets.delete("sales", "orders")
    upload_table(alice, "sales", "orders", pa.table({"id": [7]}), tmp_path)  # version 0 again
    assert ids(alice) == [7]

    # Even with the cache holding the old table's version 0 and the new row taking the old id
    # (SQLite may reuse it), the new table's version 0 is not the old one.
    with data_platform.store.begin() as session:
        new = datasets.get(session, require_project(session, "sales"), "orders")
        datasets._snapshots.clear()
        stale = datasets.Snapshot(0, old_files, pa.schema([("id", pa.int64())]))
        old_row = datasets.Dataset(id=old_id, name="orders", created_at=old.created_at)
        datasets._remember(store, "sales", old_row, stale)
        assert new.current_version == 0
        assert datasets.snapshot(store, "sales", new).files != old_files
    assert ids(alice) == [7]


def test_a_granted_product_is_read_at_its_new_versions(data_platform: Platform, alice: Client, tmp_path: Path) -> None:
    admin = data_platform.admin()
    bob = data_platform.user("bob", admin_client=admin)
    bob.projects.create("churn")
    upload_table(bob, "churn", "features", pa.table({"id": [1]}), tmp_path)
    bob.products.publish("churn", "features", description="features")
    request = alice.products.request("churn/features", for_project="sales")
    bob.products.grant("churn", request.id)
    assert ids(alice, "SELECT id FROM churn.features") == [1]
    upload_table(bob, "churn", "features", pa.table({"id": [2]}), tmp_path)
    assert ids(alice, "SELECT id FROM churn.features ORDER BY id") == [1, 2]


# -- the sandbox and the parser ----------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[LocalObjectStore, Path, Path]]:
    import pyarrow.parquet as pq

    store = LocalObjectStore(tmp_path / "objects")
    offered, hidden = tmp_path / "objects" / "offered.parquet", tmp_path / "objects" / "hidden.parquet"
    offered.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), offered)
    pq.write_table(pa.table({"a": [SECRET_MARK]}), hidden)
    sandbox._kept.clear()
    yield store, offered, hidden
    sandbox._kept.clear()


def ref(path: Path, name: str = "t") -> TableRef:
    return TableRef(name, (str(path),), pa.schema([("a", pa.int64())]))


def test_a_sandbox_is_reused_only_for_exactly_the_same_tables(files: tuple[LocalObjectStore, Path, Path]) -> None:
    store, offered, hidden = files
    with sandbox.sandbox(store, [ref(offered)]) as first:
        assert first.query("SELECT sum(a) FROM t")[0].to_pylist() == [{"sum(a)": 3}]
    with sandbox.sandbox(store, [ref(offered)]) as again:
        assert again is first
        with pytest.raises(InvalidInput):  # a refused query does not spoil it...
            again.query("SELECT * FROM read_parquet('x')")
    with sandbox.sandbox(store, [ref(offered)]) as same:
        assert same is first  # ...and it is kept
    with sandbox.sandbox(store, [ref(offered, "u")]) as renamed, sandbox.sandbox(store, [ref(hidden)]) as other:
        assert renamed is not first and other is not first
    with sandbox.sandbox(store, [ref(offered)], memory_limit="1GB") as limited:
        assert limited is not first


def test_a_reused_sandbox_is_as_locked_as_a_new_one(files: tuple[LocalObjectStore, Path, Path]) -> None:
    import duckdb

    store, offered, hidden = files
    for _ in range(2):
        with sandbox.sandbox(store, [ref(offered)]) as box:
            for sql in [
                f"SELECT * FROM read_parquet('{hidden}')",
                "SET enable_external_access = true",
                f"SET allowed_paths = ['{hidden}']",
                "SET lock_configuration = false",
            ]:
                with pytest.raises(duckdb.Error):
                    box.con.execute(sql).fetchall()
            assert box.con.execute("SELECT count(*) FROM t").fetchall() == [(2,)]


def test_a_sandbox_stopped_by_the_time_limit_is_not_reused(files: tuple[LocalObjectStore, Path, Path]) -> None:
    store, offered, _ = files
    with sandbox.sandbox(store, [ref(offered)], timeout=0.2) as box, pytest.raises(InvalidInput, match="time limit"):
        box.query("SELECT count(*) FROM range(1000000000000000) t(x) WHERE x % 7 = 100")
    with sandbox.sandbox(store, [ref(offered)], timeout=0.2) as fresh:
        assert fresh is not box
        assert fresh.query("SELECT count(*) AS n FROM t")[0].to_pylist() == [{"n": 2}]


def test_at_most_a_few_sandboxes_are_kept(
    files: tuple[LocalObjectStore, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, offered, _ = files
    monkeypatch.setattr(sandbox, "_KEPT_SANDBOXES", 4)
    boxes: list[Sandbox] = []
    for i in range(sandbox._KEPT_SANDBOXES + 2):
        with sandbox.sandbox(store, [ref(offered, f"t{i}")]) as box:
            boxes.append(box)
    assert len(sandbox._kept._boxes) == 4
    with sandbox.sandbox(store, [ref(offered, "t0")]) as oldest:
        assert oldest is not boxes[0]  # the oldest went first
    monkeypatch.setattr(sandbox, "_KEPT_SECONDS", 0.0)
    with sandbox.sandbox(store, [ref(offered, "t5")]) as expired:
        assert expired is not boxes[5]


def test_the_parser_is_shared_safely_between_threads() -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                name = f"t{n}_{i}"
                assert check_sql(f"SELECT * FROM {name} JOIN u USING (id)", {name, "u"}) == {name, "u"}
                assert tables_in(f"WITH c AS (SELECT 1) SELECT * FROM c, s.{name}") == {"c", f"s.{name}"}
                with pytest.raises(InvalidInput, match="only SELECT"):
                    check_sql(f"DROP TABLE {name}", {name})
        except BaseException as e:  # collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
