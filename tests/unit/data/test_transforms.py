"""Transforms through the SDK: SQL in the sandbox and Polars in a child process, each a new version
whose lineage names the exact input versions; a failing transform is a clear 422 and commits nothing."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.data._landlock import abi_version
from selfserve.data.objectstore import dataset_prefix
from selfserve.errors import InvalidInput, NotFound
from selfserve.settings import get_settings
from tests.support import Platform, free_port, make_platform, upload_table, wait_job

# Transforms run in DuckDB and Polars; their catalog writes are the datasets suite's subject (both DBs).
STORE_INDEPENDENT = True

P = "sales"


@pytest.fixture
def owner(platform: Platform, tmp_path: Path) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    upload_table(alice, P, "orders", pa.table({"customer": ["a", "b", "a"], "amount": [10.0, 5.0, 2.5]}), tmp_path)
    upload_table(alice, P, "orders", pa.table({"customer": ["c"], "amount": [1.0]}), tmp_path)
    upload_table(alice, P, "customers", pa.table({"customer": ["a", "b", "c"], "region": ["eu", "us", "eu"]}), tmp_path)
    return alice


def table_of(client: Client, name: str, **kwargs: object) -> list[list[object]]:
    return sorted(client.datasets.preview(P, name, limit=100, **kwargs).rows)  # type: ignore[arg-type]


SQL = """
SELECT c.region, sum(o.amount) AS total
FROM orders o JOIN customers c USING (customer)
GROUP BY c.region
"""


def test_a_sql_transform_is_a_new_version_with_its_exact_inputs(owner: Client, tmp_path: Path) -> None:
    job = owner.datasets.transform(P, "by-region", sql=SQL)
    assert job.status == "succeeded" and job.result
    assert job.result["dataset"] == "by-region" and job.result["version"] == 0
    assert table_of(owner, "by-region") == [["eu", 13.5], ["us", 5.0]]
    [v0] = owner.datasets.history(P, "by-region")
    assert v0.inputs == [
        {"project": P, "dataset": "customers", "version": 0},
        {"project": P, "dataset": "orders", "version": 1},
    ]
    assert v0.producer["kind"] == "transform" and v0.producer["engine"] == "duckdb"
    assert "GROUP BY" in v0.producer["sql"]

    upload_table(owner, P, "orders", pa.table({"customer": ["b"], "amount": [100.0]}), tmp_path)
    again = owner.datasets.transform(P, "by-region", sql=SQL)
    assert again.result and again.result["version"] == 1
    newest = owner.datasets.history(P, "by-region")[0]
    assert {"project": P, "dataset": "orders", "version": 2} in newest.inputs
    assert table_of(owner, "by-region") == [["eu", 13.5], ["us", 105.0]]
    assert table_of(owner, "by-region", version=0) == [["eu", 13.5], ["us", 5.0]]


def test_a_sql_transform_names_only_the_tables_it_reads_as_inputs(owner: Client) -> None:
    owner.datasets.transform(P, "big", sql="WITH x AS (SELECT * FROM orders WHERE amount > 3) SELECT * FROM x")
    assert owner.datasets.history(P, "big")[0].inputs == [{"project": P, "dataset": "orders", "version": 1}]
    owner.datasets.transform(P, "numbers", sql="SELECT range AS n FROM range(3)")
    assert owner.datasets.history(P, "numbers")[0].inputs == []


def test_a_refused_sql_transform_is_refused_before_any_job(owner: Client) -> None:
    before = owner.jobs.list(P)
    with pytest.raises(InvalidInput, match="read_csv"):
        owner.datasets.transform(P, "stolen", sql="SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(InvalidInput, match="only SELECT"):
        owner.datasets.transform(P, "stolen", sql="COPY orders TO '/tmp/x.csv'")
    with pytest.raises(InvalidInput, match="exactly one of sql or polars"):
        owner.datasets.transform(P, "stolen")
    assert owner.jobs.list(P) == before
    with pytest.raises(NotFound):
        owner.datasets.get(P, "stolen")


POLARS = """
import polars as pl

def transform(orders: pl.LazyFrame, customers: pl.LazyFrame) -> pl.LazyFrame:
    return (
        orders.join(customers, on="customer")
        .group_by("region")
        .agg(pl.col("amount").sum().alias("total"))
    )
"""


def test_a_polars_transform_is_a_new_version_with_its_exact_inputs(owner: Client) -> None:
    job = owner.datasets.transform(P, "by-region", polars=POLARS)
    assert job.status == "succeeded"
    assert table_of(owner, "by-region") == [["eu", 13.5], ["us", 5.0]]
    [v0] = owner.datasets.history(P, "by-region")
    assert sorted(v0.inputs, key=lambda i: i["dataset"]) == [
        {"project": P, "dataset": "customers", "version": 0},
        {"project": P, "dataset": "orders", "version": 1},
    ]
    assert v0.producer["engine"] == "polars" and v0.producer["function"] == "transform"

    # Inputs pinned by version, under other parameter names.
    code = "def build(o, c):\n    return o.join(c, on='customer').select('customer', 'region', 'amount')\n"
    owner.datasets.transform(P, "joined", polars=code, function="build", inputs={"o": "orders@0", "c": "customers"})
    [j0] = owner.datasets.history(P, "joined")
    assert sorted(j0.inputs, key=lambda i: i["dataset"]) == [
        {"project": P, "dataset": "customers", "version": 0},
        {"project": P, "dataset": "orders", "version": 0},
    ]
    assert j0.rows == 3  # version 0 of orders has three rows, the latest four


def failing(owner: Client, code: str, **options: object) -> str:
    """Run a Polars transform that must fail: its job fails with a 422 and nothing is committed."""
    job = owner.datasets.transform(P, "out", polars=code, wait=False, **options)
    with pytest.raises(InvalidInput) as e:
        owner.jobs.wait(P, job.id, timeout=120)
    ended = owner.jobs.get(P, job.id)
    assert ended.status == "failed" and ended.error == e.value.message
    assert ended.result and ended.result["error"]["code"] == "invalid_input"
    with pytest.raises(NotFound):
        owner.datasets.get(P, "out")
    return e.value.message


def test_a_polars_transform_that_raises_is_a_clear_422(owner: Client) -> None:
    code = "def transform(orders):\n    x = 1\n    return 1 / 0\n"
    message = failing(owner, code)
    assert "ZeroDivisionError" in message and "line 3" in message


def test_a_polars_transform_that_returns_the_wrong_type_is_a_clear_422(owner: Client) -> None:
    message = failing(owner, "def transform(orders):\n    return {'rows': 1}\n")
    assert "returned dict" in message and "LazyFrame or DataFrame" in message


def test_a_polars_file_without_the_function_is_a_clear_422(owner: Client) -> None:
    assert "no function 'transform'" in failing(owner, "def other(orders):\n    return orders\n")
    assert "no function 'build'" in failing(owner, POLARS, function="build")
    assert "no function 'transform'" in failing(owner, "transform = 3\n")


def test_a_polars_file_that_does_not_import_is_a_clear_422(owner: Client) -> None:
    assert "SyntaxError" in failing(owner, "def transform(orders)\n    return orders\n")
    assert "ModuleNotFoundError" in failing(owner, "import no_such_module_here\n")


def test_a_polars_transform_reading_a_missing_dataset_is_refused(owner: Client) -> None:
    job = owner.datasets.transform(
        P, "out", polars="def transform(nothing_here):\n    return nothing_here\n", wait=False
    )
    with pytest.raises(NotFound, match="nothing-here"):
        owner.jobs.wait(P, job.id, timeout=120)


def test_the_polars_child_gets_no_platform_environment(owner: Client) -> None:
    assert any(k.startswith("SELFSERVE_") for k in os.environ)  # the platform process has some
    code = textwrap.dedent(
        """
        import os
        import polars as pl

        def transform():
            return pl.DataFrame({"key": sorted(os.environ)})
        """
    )
    owner.datasets.transform(P, "env", polars=code)
    keys = [r[0] for r in owner.datasets.preview(P, "env", limit=1000).rows]
    assert keys  # PATH at least
    assert [k for k in keys if k.upper().startswith("SELFSERVE")] == []
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"} & set(keys)


def test_a_polars_transform_may_print(owner: Client) -> None:
    """Output of the user's code must not be taken for the platform's protocol messages."""
    code = textwrap.dedent(
        """
        import sys
        print("hello")
        print("x" * 200_000, file=sys.stderr)  # more than a pipe holds

        def transform(orders):
            print('{"error": "fake"}')
            return orders
        """
    )
    job = owner.datasets.transform(P, "printed", polars=code)
    assert job.status == "succeeded"
    assert owner.datasets.get(P, "printed").rows == 4


def test_a_polars_transform_that_never_ends_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("SELFSERVE_DATA__TRANSFORM_TIMEOUT", "2")
    get_settings.cache_clear()
    platform = make_platform(tmp_path / "timeout-home", db_url)
    try:
        alice = platform.user("alice")
        alice.projects.create(P)
        job = alice.datasets.transform(
            P, "never", polars="def transform():\n    while True:\n        pass\n", wait=False
        )
        ended = wait_job(alice, P, job.id, timeout=60)
        assert ended.status == "failed" and ended.error and "2 s time limit" in ended.error
        usage = {i.resource: i.amount for i in alice.quotas.usage(P).items}
        assert usage["runs"] == 0
    finally:
        platform.close()


@pytest.mark.skipif(abi_version() < 4, reason="the kernel has no Landlock with network rules (ABI 4+)")
def test_the_polars_child_reads_no_platform_file_and_opens_no_connection(
    platform: Platform, owner: Client, tmp_path: Path
) -> None:
    bob = platform.user("bob")
    bob.projects.create("other")
    upload_table(bob, "other", "secrets", pa.table({"x": ["bob-private-9931"]}), tmp_path)
    store = platform.app.state.object_store
    home = platform.settings.home
    targets = {
        "secret key": home / "secret.key",
        "metadata db": Path(str(platform.store.engine.url.database or home / "selfserve.db")),
        "other project": next(store.path(dataset_prefix("other", "secrets")).glob("*.parquet")),
        "api process environment": Path(f"/proc/{os.getpid()}/environ"),
        "passwd": Path("/etc/passwd"),
        "home directory": home,
    }
    assert targets["secret key"].exists() and targets["other project"].exists()
    code = textwrap.dedent(
        f"""
        import os
        import socket
        import polars as pl

        TARGETS = { ({k: str(v) for k, v in targets.items()})!r}

        def attempt(path):
            try:
                if os.path.isdir(path):
                    os.listdir(path)
                else:
                    with open(path, "rb") as f:
                        f.read(10)
                return "read"
            except PermissionError:
                return "denied"
            except FileNotFoundError:
                return "missing"

        def connect():
            try:
                socket.create_connection(("127.0.0.1", {free_port()}), timeout=2).close()
                return "connected"
            except PermissionError:
                return "denied"
            except OSError as e:
                return "network: " + type(e).__name__

        def transform():
            outcomes = {{k: attempt(v) for k, v in TARGETS.items()}}
            outcomes["tcp connect"] = connect()
            return pl.DataFrame({{"target": list(outcomes), "outcome": list(outcomes.values())}})
        """
    )
    owner.datasets.transform(P, "escape", polars=code)
    outcomes = dict(owner.datasets.preview(P, "escape", limit=100).rows)  # type: ignore[arg-type]
    assert outcomes.pop("metadata db") in ("denied", "missing")  # missing: the metadata DB is PostgreSQL
    assert outcomes == {name: "denied" for name in [*targets, "tcp connect"] if name != "metadata db"}
    assert owner.datasets.history(P, "escape")[0].producer["confined"] is True
