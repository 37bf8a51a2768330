"""User SQL reaches only the project's datasets and the products granted to it: every escape is a 422.

Each attempt is its own test, run through the SDK against a world where another project holds
data (and a published, ungranted product) next to the caller's. An attempt must be refused
with a message and must never return data; the walls are also tested one by one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.data.objectstore import LocalObjectStore, dataset_prefix
from selfserve.data.sandbox import Sandbox, TableRef, check_sql
from selfserve.errors import InvalidInput
from selfserve.settings import get_settings
from tests.support import Platform, make_platform, postgres_database, upload_table

PG_ENV = "SELFSERVE_TEST_POSTGRES_URL"

SECRET_MARK = "bob-private-7731"


@dataclass
class World:
    platform: Platform
    alice: Client
    bob: Client
    other_file: str  # a Parquet file of bob's project
    other_dir: str  # the directory of bob's dataset
    own_file: str  # a Parquet file of alice's own dataset


def _backends() -> list[object]:
    return [
        "sqlite",
        pytest.param(
            "postgres",
            marks=[pytest.mark.postgres, pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set")],
        ),
    ]


@pytest.fixture(scope="module", params=_backends())
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world per module and metadata DB: every test here only reads it (refusals change nothing)."""
    tmp = tmp_path_factory.mktemp("sandbox-world")
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(pytest.MonkeyPatch.context())
        for key in list(os.environ):
            if key.startswith("SELFSERVE_") and key != PG_ENV:
                env.delenv(key)
        env.setenv("SELFSERVE_HOME", str(tmp / "home"))
        env.setenv("SELFSERVE_CONFIG_DIR", str(tmp / "config"))
        env.setenv("SELFSERVE_PIPELINES__ENABLED", "false")  # as in every unit test: no Prefect here
        env.setenv("SELFSERVE_MODELS__ENABLED", "false")  # nor MLflow
        get_settings.cache_clear()
        stack.callback(get_settings.cache_clear)
        if request.param == "sqlite":
            db_url = f"sqlite:///{tmp / 'meta.db'}"
        else:
            db_url = stack.enter_context(postgres_database(os.environ[PG_ENV]))
        platform = make_platform(tmp / "home", db_url)
        stack.callback(platform.close)
        admin = platform.admin()
        alice = platform.user("alice", admin_client=admin)
        bob = platform.user("bob", admin_client=admin)
        alice.projects.create("sales")
        bob.projects.create("churn")
        upload_table(alice, "sales", "orders", pa.table({"id": [1, 2, 3], "amount": [10.0, 20.0, 30.0]}), tmp)
        upload_table(bob, "churn", "features", pa.table({"customer": ["c1"], "note": [SECRET_MARK]}), tmp)
        upload_table(bob, "churn", "private", pa.table({"note": [SECRET_MARK]}), tmp)
        bob.products.publish("churn", "features", description="churn features")
        store = platform.app.state.object_store
        assert isinstance(store, LocalObjectStore)
        other_dir = store.path(dataset_prefix("churn", "private"))
        own_dir = store.path(dataset_prefix("sales", "orders"))
        yield World(
            platform,
            alice,
            bob,
            str(next(other_dir.glob("*.parquet"))),
            str(other_dir),
            str(next(own_dir.glob("*.parquet"))),
        )


def refused(world: World, sql: str, *needles: str) -> str:
    """Run ``sql`` as alice in sales; it must be refused (422) with a message naming ``needles``."""
    with pytest.raises(InvalidInput) as e:
        world.alice.datasets.query("sales", sql)
    message = e.value.message
    assert message, "a refusal must say why"
    assert SECRET_MARK not in message and "root:" not in message
    for needle in needles:
        assert needle.lower() in message.lower(), message
    return message


def test_the_own_datasets_can_be_queried(world: World) -> None:
    """The control for every refusal below: the same caller's plain query works."""
    result = world.alice.datasets.query("sales", "SELECT sum(amount) AS total, count(*) AS n FROM orders")
    assert result.rows == [[60.0, 3]]
    assert [c.name for c in result.columns] == ["total", "n"]
    assert world.alice.datasets.query("sales", "SELECT count(*) FROM range(10)").rows == [[10]]
    with_cte = world.alice.datasets.query(
        "sales", "WITH big AS (SELECT * FROM orders WHERE amount > 15) SELECT id FROM big ORDER BY id"
    )
    assert with_cte.rows == [[2], [3]]


def test_results_of_any_type_come_back_as_json(world: World) -> None:
    result = world.alice.datasets.query(
        "sales",
        "SELECT TIME '12:30:00' AS t, INTERVAL 1 DAY AS i, 7::UTINYINT AS u, [TIME '01:00:00'] AS l, "
        "DATE '2024-01-02' AS d, 1.5::DECIMAL(4, 2) AS m, 'nan'::DOUBLE AS f, NULL AS n",
    )
    assert [c.name for c in result.columns] == ["t", "i", "u", "l", "d", "m", "f", "n"]
    [row] = result.rows
    assert row[0] == "12:30:00" and row[2] == 7 and row[3] == ["01:00:00"] and row[4] == "2024-01-02"
    assert row[5] == 1.5 and row[6] is None and row[7] is None


ESCAPES = {
    # files of the host
    "read_csv /etc/passwd": ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    "read_csv_auto /etc/passwd": ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto"),
    "read_parquet /etc/passwd": ("SELECT * FROM read_parquet('/etc/passwd')", "read_parquet"),
    "read_text /etc/passwd": ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    "read_blob /etc/passwd": ("SELECT * FROM read_blob('/etc/passwd')", "read_blob"),
    "read_json /etc/passwd": ("SELECT * FROM read_json('/etc/passwd')", "read_json"),
    "string literal table /etc/passwd": ("SELECT * FROM '/etc/passwd'", "unknown table"),
    "bare FROM read_csv": ("FROM read_csv('/etc/passwd')", "read_csv"),
    "read_csv in a CTE": ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "read_csv"),
    "read_text in a scalar subquery": ("SELECT (SELECT content FROM read_text('/etc/passwd')) AS c", "read_text"),
    "read_csv joined to a dataset": ("SELECT * FROM orders, read_csv('/etc/passwd')", "read_csv"),
    "read_text inside unnest": (
        "SELECT * FROM unnest((SELECT list(content) FROM read_text('/etc/passwd')))",
        "read_text",
    ),
    "read_csv under DESCRIBE": ("DESCRIBE SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    "read_text under SUMMARIZE": ("SUMMARIZE SELECT * FROM read_text('/etc/passwd')", "read_text"),
    "glob /etc": ("SELECT * FROM glob('/etc/*')", "glob"),
    "query() of a file read": ("SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "query"),
    "sqlite_scan": ("SELECT * FROM sqlite_scan('/etc/passwd', 'x')", "sqlite_scan"),
    "delta_scan": ("SELECT * FROM delta_scan('/tmp')", "delta_scan"),
    # the network
    "http URL as a table": ("SELECT * FROM 'http://127.0.0.1:9/data.csv'", "unknown table"),
    "https URL in read_parquet": ("SELECT * FROM read_parquet('https://example.com/x.parquet')", "read_parquet"),
    "s3 URL in read_parquet": ("SELECT * FROM read_parquet('s3://bucket/projects/churn/x.parquet')", "read_parquet"),
    # statements other than SELECT
    "ATTACH": ("ATTACH '/tmp/evil.db' AS evil", "only SELECT", "ATTACH"),
    "DETACH": ("DETACH memory", "only SELECT"),
    "INSTALL": ("INSTALL httpfs", "only SELECT"),
    "LOAD": ("LOAD httpfs", "only SELECT"),
    "COPY TO": ("COPY (SELECT * FROM orders) TO '/tmp/stolen.csv'", "only SELECT", "COPY"),
    "COPY FROM": ("COPY orders FROM '/etc/passwd'", "only SELECT", "COPY"),
    "SET": ("SET enable_external_access = true", "only SELECT", "SET"),
    "SET allowed_paths": ("SET allowed_paths = ['/etc/passwd']", "only SELECT", "SET"),
    "RESET": ("RESET allowed_paths", "only SELECT"),
    "PRAGMA": ("PRAGMA database_list", "only SELECT", "PRAGMA"),
    "CALL": ("CALL duckdb_settings()", "only SELECT", "CALL"),
    "CREATE TABLE": ("CREATE TABLE t AS SELECT 1 AS x", "only SELECT", "CREATE"),
    "CREATE VIEW": ("CREATE VIEW orders2 AS SELECT * FROM read_csv('/etc/passwd')", "only SELECT", "CREATE"),
    "CREATE SECRET": ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "only SELECT", "CREATE"),
    "CREATE MACRO": ("CREATE MACRO m() AS TABLE SELECT * FROM read_csv('/etc/passwd')", "only SELECT", "CREATE"),
    "DROP": ("DROP VIEW orders", "only SELECT", "DROP"),
    "INSERT": ("INSERT INTO orders VALUES (4, 40.0)", "only SELECT", "INSERT"),
    "UPDATE": ("UPDATE orders SET amount = 0", "only SELECT", "UPDATE"),
    "DELETE": ("DELETE FROM orders", "only SELECT", "DELETE"),
    "EXPORT DATABASE": ("EXPORT DATABASE '/tmp/export'", "only SELECT", "EXPORT"),
    "IMPORT DATABASE": ("IMPORT DATABASE '/tmp/export'", "only SELECT", "IMPORT"),
    "multiple statements": ("SELECT 1; SELECT 2", "one statement"),
    "SELECT then DROP": ("SELECT * FROM orders; DROP VIEW orders", "one statement"),
    "SELECT then COPY": ("SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'", "one statement"),
    # the engine's own settings, secrets and catalog
    "duckdb_settings()": ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
    "duckdb_secrets()": ("SELECT * FROM duckdb_secrets()", "duckdb_secrets"),
    "duckdb_views bare": ("SELECT * FROM duckdb_views", "unknown table"),
    "duckdb_views()": ("SELECT * FROM duckdb_views()", "duckdb_views"),
    "duckdb_tables()": ("SELECT * FROM duckdb_tables()", "duckdb_tables"),
    "duckdb_extensions()": ("SELECT * FROM duckdb_extensions()", "duckdb_extensions"),
    "which_secret()": ("SELECT * FROM which_secret('s3://bucket/x', 's3')", "which_secret"),
    "information_schema.tables": ("SELECT * FROM information_schema.tables", "unknown table"),
    "information_schema.columns": ("SELECT * FROM information_schema.columns", "unknown table"),
    "pg_catalog": ("SELECT * FROM pg_catalog.pg_views", "unknown table"),
    "sqlite_master": ("SELECT * FROM sqlite_master", "unknown table"),
    "getenv": ("SELECT getenv('HOME') AS home", "getenv"),
    "getenv schema-qualified": ("SELECT main.getenv('HOME') AS home", "getenv"),
    "current_setting": ("SELECT current_setting('allowed_paths') AS paths", "current_setting"),
    "pg_get_viewdef": ("SELECT pg_get_viewdef(x) FROM range(100000) t(x)", "pg_get_viewdef"),
    "the catalog by full name": ("SELECT * FROM memory.main.orders_missing", "unknown table"),
}


@pytest.mark.store_independent  # DuckDB's confinement; the catalog suites run on both stores
@pytest.mark.parametrize("attempt", list(ESCAPES), ids=list(ESCAPES))
def test_an_escape_attempt_is_refused(world: World, attempt: str) -> None:
    sql, *needles = ESCAPES[attempt]
    refused(world, sql, *needles)


def test_read_parquet_of_another_projects_file_is_refused(world: World) -> None:
    refused(world, f"SELECT * FROM read_parquet('{world.other_file}')", "read_parquet")


def test_read_csv_of_another_projects_file_is_refused(world: World) -> None:
    refused(world, f"SELECT * FROM read_csv('{world.other_file}')", "read_csv")


def test_read_text_of_another_projects_log_is_refused(world: World) -> None:
    refused(world, f"SELECT * FROM read_text('{world.other_dir}/_delta_log/00000000000000000000.json')", "read_text")


def test_glob_of_another_projects_directory_is_refused(world: World) -> None:
    refused(world, f"SELECT * FROM glob('{world.other_dir}/*')", "glob")


def test_another_projects_file_as_a_string_table_is_refused(world: World) -> None:
    refused(world, f"SELECT * FROM '{world.other_file}'", "unknown table")


def test_even_the_own_files_are_not_reachable_by_path(world: World) -> None:
    refused(world, f"SELECT * FROM read_parquet('{world.own_file}')", "read_parquet")
    refused(world, f"SELECT * FROM '{world.own_file}'", "unknown table")


def test_another_projects_dataset_by_name_is_refused(world: World) -> None:
    message = refused(world, "SELECT * FROM private", "unknown table", "private")
    assert "orders" in message  # the message lists what can be queried
    refused(world, "SELECT * FROM churn.private", "unknown table")
    refused(world, 'SELECT * FROM "churn"."private"', "unknown table")


def test_an_ungranted_product_is_refused(world: World) -> None:
    refused(world, "SELECT * FROM churn.features", "unknown table", "churn.features")
    refused(world, "SELECT * FROM features", "unknown table")


def test_a_long_query_is_stopped_at_the_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("SELFSERVE_DATA__QUERY_TIMEOUT", "1")
    get_settings.cache_clear()
    platform = make_platform(tmp_path / "timeout-home", db_url)
    try:
        alice = platform.user("alice")
        alice.projects.create("sales")
        upload_table(alice, "sales", "orders", pa.table({"id": [1]}), tmp_path)
        # Streams a quadrillion numbers in constant memory: only the clock can stop it.
        sql = "SELECT count(*) FROM range(1000000000000000) t(x) WHERE x % 7 = 100"
        with pytest.raises(InvalidInput, match="1 s time limit"):
            alice.datasets.query("sales", sql)
        assert alice.datasets.query("sales", "SELECT count(*) FROM orders").rows == [[1]]  # the platform lives on
    finally:
        platform.close()


SYNTAX_ERRORS = {
    "misspelt keyword": ("SELEC * FROM orders", "SELEC"),
    "unclosed parenthesis": ("SELECT (1 FROM orders", "syntax error"),
    "dangling comma": ("SELECT id, FROM orders WHERE", "syntax error"),
}


@pytest.mark.parametrize("case", list(SYNTAX_ERRORS), ids=list(SYNTAX_ERRORS))
def test_a_syntax_error_is_a_422_naming_the_error(world: World, case: str) -> None:
    sql, needle = SYNTAX_ERRORS[case]
    message = refused(world, sql, "syntax error", needle)
    assert message.startswith("SQL syntax error")


def test_errors_while_running_are_422_naming_the_error(world: World) -> None:
    refused(world, "SELECT no_such_column FROM orders", "query failed", "no_such_column")
    refused(world, "SELECT 1 / 'x'::INTEGER", "query failed", "conversion")
    refused(world, "", "empty query")
    refused(world, "   ", "empty query")


# -- the walls one by one ---------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Sandbox, Path]]:
    import pyarrow.parquet as pq

    store = LocalObjectStore(tmp_path / "objects")
    offered, hidden = tmp_path / "objects" / "offered.parquet", tmp_path / "objects" / "hidden.parquet"
    offered.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), offered)
    pq.write_table(pa.table({"a": [SECRET_MARK]}), hidden)
    sandbox = Sandbox(store, [TableRef("t", (str(offered),), pa.schema([("a", pa.int64())]))], timeout=5)
    try:
        yield sandbox, hidden
    finally:
        sandbox.close()


def test_the_connection_reads_no_file_but_the_offered_ones_even_unchecked(box: tuple[Sandbox, Path]) -> None:
    """Wall 2 without wall 1: SQL that the checker would refuse, sent to the connection directly."""
    import duckdb

    sandbox, hidden = box
    assert sandbox.con.execute("SELECT sum(a) FROM t").fetchall() == [(3,)]
    for sql in [
        f"SELECT * FROM read_parquet('{hidden}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"SELECT * FROM glob('{hidden.parent}/*')",
        "COPY (SELECT 1) TO '/tmp/selfserve-sandbox-escape.csv'",
        "ATTACH '/tmp/selfserve-sandbox-escape.db' AS x",
        "SET enable_external_access = true",
        "SET allowed_paths = ['/etc/passwd']",
        "SET lock_configuration = false",
        "INSTALL httpfs",
    ]:
        with pytest.raises(duckdb.Error):
            sandbox.con.execute(sql).fetchall()
    assert not Path("/tmp/selfserve-sandbox-escape.csv").exists()
    assert not Path("/tmp/selfserve-sandbox-escape.db").exists()


def test_the_checker_alone_refuses_what_the_connection_would_not_see(box: tuple[Sandbox, Path]) -> None:
    """Wall 1 without wall 2: the text is refused before any connection runs it."""
    for sql in ["SELECT * FROM read_parquet('x.parquet')", "SELECT * FROM other", "SELECT getenv('HOME')"]:
        with pytest.raises(InvalidInput):
            check_sql(sql, {"t"})
    check_sql("SELECT a FROM t WHERE a IN (SELECT * FROM range(3))", {"t"})
