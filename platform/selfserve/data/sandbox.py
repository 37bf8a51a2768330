"""User SQL in DuckDB that reaches only the project's datasets and the products granted to it.

Three walls, each enough on its own for the common escapes:

1. The text must be ONE ``SELECT``; its syntax tree may name only the tables offered (and its
   own CTEs), and may call no table function but ``range``/``generate_series``/``unnest``:
   no ``read_csv('/etc/passwd')``, no ``ATTACH``, ``INSTALL``, ``LOAD``, ``COPY``, ``SET``, ``PRAGMA``.
2. The connection has external access off, only the exact Parquet files of the offered
   versions in ``allowed_paths``, extension auto-loading off, and its configuration locked.
3. Each table is a view over those files, resolved from the Delta log by the platform, so the
   user's SQL never sees a storage path and the engine never reads another project's log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from selfserve.data.objectstore import ObjectStore
from selfserve.errors import InvalidInput

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Scalar functions that read the process's environment or the engine's own configuration and
# catalog (which hold the storage paths of the offered files), or are macros over the catalog's
# table functions. Checked by name, so a schema-qualified call is refused too.
DENIED_FUNCTIONS = frozenset({"getenv", "current_setting", "which_secret"})
DENIED_FUNCTION_PREFIXES = ("duckdb_", "pg_get_")


@dataclass(frozen=True)
class TableRef:
    """A dataset version offered to a query: ``schema`` is empty for the project's own datasets and
    the producing project's name for a granted product (``churn.features``)."""

    name: str
    files: tuple[str, ...]
    schema: pa.Schema
    namespace: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}" if self.namespace else self.name


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _walk(node: Any, visit: Any) -> None:
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            _walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            _walk(v, visit)


# One parsing connection per process, reused under a lock: opening a DuckDB database costs
# milliseconds, parsing a query a fraction of one. It parses only (it never runs the text it is
# given) and has external access off, as statement splitting can read files (IMPORT DATABASE
# reads the directory's schema.sql). A forked child opens its own.
_parser: tuple[int, Any] | None = None
_parser_lock = threading.Lock()


def _parse(sql: str) -> tuple[list[Any], dict[str, Any]]:
    """The statements of ``sql`` and the syntax tree of the whole text (``json_serialize_sql``).

    Raises:
        duckdb.Error: the text does not split into statements.
    """
    import duckdb

    global _parser
    with _parser_lock:
        if _parser is None or _parser[0] != os.getpid():
            _parser = (os.getpid(), duckdb.connect(":memory:", config={"enable_external_access": False}))
        con = _parser[1]
        statements = con.extract_statements(sql)
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    return statements, json.loads(row[0])  # type: ignore[index]


def check_sql(sql: str, offered: set[str]) -> set[str]:
    """Refuse anything but a single SELECT over the offered tables.

    Returns:
        The names of the tables the query reads, as :func:`tables_in` gives them.

    Raises:
        InvalidInput: with the reason (syntax error, statement type, unknown table, file access).
    """
    import duckdb

    if not sql or not sql.strip():
        raise InvalidInput("empty query")
    try:
        statements, tree = _parse(sql)
    except duckdb.PermissionException:
        raise InvalidInput(f"only SELECT queries are allowed, not {_first_word(sql)}") from None
    except duckdb.Error as e:
        raise InvalidInput(f"SQL syntax error: {_first_line(e)}") from None
    if len(statements) != 1:
        raise InvalidInput(f"one statement per query, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InvalidInput(f"only SELECT queries are allowed, not {kind.name}")
    if tree.get("error"):
        message = str(tree.get("error_message", "cannot parse"))
        if message.startswith("Only SELECT statements"):  # e.g. PRAGMA, which splits as a SELECT
            raise InvalidInput(f"only SELECT queries are allowed, not {_first_word(sql)}")
        raise InvalidInput(f"SQL syntax error: {message}")

    ctes: set[str] = set()
    tables: list[str] = []
    functions: list[str] = []
    scalars: list[str] = []

    def visit(n: dict[str, Any]) -> None:
        if "cte_map" in n:
            ctes.update(e["key"].lower() for e in n["cte_map"].get("map", []))
        t = n.get("type")
        if t == "BASE_TABLE":
            name = n.get("table_name", "")
            if n.get("catalog_name"):
                name = f"{n['catalog_name']}.{n.get('schema_name', '')}.{name}"
            elif n.get("schema_name"):
                name = f"{n['schema_name']}.{name}"
            tables.append(name)
        elif t == "TABLE_FUNCTION":
            functions.append((n.get("function") or {}).get("function_name", "?"))
        elif n.get("class") == "FUNCTION" and isinstance(n.get("function_name"), str):
            scalars.append(n["function_name"])

    _walk(tree, visit)
    for fn in functions:
        if fn.lower() not in ALLOWED_TABLE_FUNCTIONS:
            raise InvalidInput(
                f"table function {fn}() is not allowed: queries read only the project's datasets by name"
            )
    for fn in scalars:
        if fn.lower() in DENIED_FUNCTIONS or fn.lower().startswith(DENIED_FUNCTION_PREFIXES):
            raise InvalidInput(f"function {fn}() is not allowed: it reads the platform's settings or environment")
    known = {o.lower() for o in offered} | ctes
    for t in tables:
        if t.lower() not in known:
            raise InvalidInput(f"unknown table {t!r}; the datasets you can query are: {', '.join(sorted(offered))}")
    return _base_tables(tree)


def tables_in(sql: str) -> set[str]:
    """The names of the tables a checked SELECT reads, lower case (``schema.name`` when qualified).

    CTE names are among them; callers match the names against the tables they offer.
    """
    return _base_tables(_parse(sql)[1])


def _base_tables(tree: dict[str, Any]) -> set[str]:
    names: set[str] = set()

    def visit(n: dict[str, Any]) -> None:
        if n.get("type") == "BASE_TABLE":
            name = str(n.get("table_name", ""))
            names.add(f"{n['schema_name']}.{name}".lower() if n.get("schema_name") else name.lower())

    _walk(tree, visit)
    return names


def _first_word(sql: str) -> str:
    return (sql.split() or ["?"])[0].upper()[:20]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300]


class Sandbox:
    """One locked-down DuckDB connection over a fixed set of dataset versions."""

    def __init__(
        self,
        store: ObjectStore,
        tables: list[TableRef],
        *,
        threads: int = 2,
        memory_limit: str = "2GB",
        timeout: float = 300.0,
    ) -> None:
        import duckdb

        self.tables = tables
        self.timeout = timeout
        self.interrupted = False  # by the time limit; such a connection is not kept for reuse
        self.con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "threads": threads,
                "memory_limit": memory_limit,
                # A kept sandbox would hold on to the object-store bytes it cached, up to its
                # memory limit; local files are in the OS's page cache anyway.
                "enable_external_file_cache": store.scheme != "s3",
            },
        )
        if store.scheme == "s3":
            from duckdb_extensions import import_extension

            import_extension("httpfs", con=self.con)
            self.con.execute("LOAD httpfs")
        for stmt in store.duckdb_setup():
            self.con.execute(stmt)
        paths = sorted({f for t in tables for f in t.files})
        self.con.execute(f"SET allowed_paths=[{', '.join(_lit(p) for p in paths)}]")
        self.con.execute("SET enable_progress_bar=false")  # it would print to the server's stdout
        self.con.execute("SET allowed_directories=[]")
        self.con.execute("SET temp_directory=''")
        self.con.execute("SET enable_external_access=false")
        self.con.execute("SET lock_configuration=true")
        for t in tables:
            if t.namespace:
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(t.namespace)}")
            target = f"{_quote(t.namespace)}.{_quote(t.name)}" if t.namespace else _quote(t.name)
            if t.files:
                files = ", ".join(_lit(f) for f in t.files)
                self.con.execute(f"CREATE VIEW {target} AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
            else:
                self.con.register(f"_empty_{id(t)}", t.schema.empty_table())
                self.con.execute(f"CREATE VIEW {target} AS SELECT * FROM {_quote(f'_empty_{id(t)}')}")

    def offered(self) -> set[str]:
        return {t.qualified for t in self.tables}

    def query(self, sql: str, *, limit: int | None = None) -> tuple[pa.Table, bool]:
        """Run one checked SELECT; returns the result and whether ``limit`` cut it short.

        Raises:
            InvalidInput: refused or failing SQL, or over the time limit.
        """
        import duckdb

        check_sql(sql, self.offered())
        body = sql.strip().rstrip(";")
        wrapped = f"SELECT * FROM ({body}) AS q LIMIT {limit + 1}" if limit is not None else body
        timer = threading.Timer(self.timeout, self._interrupt)
        timer.start()
        try:
            result = self.con.execute(wrapped).to_arrow_table()
        except duckdb.InterruptException:
            raise InvalidInput(f"query stopped after the {self.timeout:g} s time limit") from None
        except duckdb.Error as e:
            raise InvalidInput(f"query failed: {_first_line(e)}") from None
        finally:
            timer.cancel()
        if limit is not None and result.num_rows > limit:
            return result.slice(0, limit), True
        return result, False

    def _interrupt(self) -> None:
        self.interrupted = True
        self.con.interrupt()

    def close(self) -> None:
        self.con.close()


# Sandboxes are kept for a while after use and handed to the next query over exactly the same
# tables (names and files), store and limits: opening and locking down a DuckDB database costs
# about 10 ms, as much as a small query. A kept sandbox is what a fresh one would be: its
# allowed_paths are the same offered files, its views the same, its configuration locked, and
# the one SELECT a checked query may run leaves nothing in it for the next query to find. An
# idle one holds little memory: its views, and on local storage a cache of Parquet footers.
_KEPT_SANDBOXES = 16
_KEPT_SECONDS = 60.0
_SandboxKey = tuple[Any, ...]


class _Kept:
    """Idle sandboxes, oldest first; at most ``_KEPT_SANDBOXES``, each for ``_KEPT_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._boxes: list[tuple[_SandboxKey, Sandbox, float]] = []

    def take(self, key: _SandboxKey) -> Sandbox | None:
        found, stale = None, []
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():  # a forked child cannot use its parent's connections
                self._pid, self._boxes = os.getpid(), []
            keep = []
            for entry in self._boxes:
                if now - entry[2] > _KEPT_SECONDS:
                    stale.append(entry[1])
                elif found is None and entry[0] == key:
                    found = entry[1]
                else:
                    keep.append(entry)
            self._boxes = keep
        for box in stale:
            box.close()
        return found

    def give(self, key: _SandboxKey, box: Sandbox) -> None:
        with self._lock:
            self._boxes.append((key, box, time.monotonic()))
            extra = self._boxes[:-_KEPT_SANDBOXES]
            del self._boxes[:-_KEPT_SANDBOXES]
        for _, old, _ in extra:
            old.close()

    def clear(self) -> None:
        with self._lock:
            boxes, self._boxes = self._boxes, []
        for _, box, _ in boxes:
            box.close()


_kept = _Kept()


def _sandbox_key(store: ObjectStore, tables: list[TableRef], threads: int, memory_limit: str) -> _SandboxKey:
    offered = sorted((t.namespace, t.name, t.files, "" if t.files else t.schema.to_string()) for t in tables)
    return (store.scheme, tuple(store.duckdb_setup()), threads, memory_limit, tuple(offered))


@contextmanager
def sandbox(
    store: ObjectStore,
    tables: list[TableRef],
    *,
    threads: int = 2,
    memory_limit: str = "2GB",
    timeout: float = 300.0,
) -> Iterator[Sandbox]:
    """A sandbox over ``tables``: a kept one if one offers exactly these, else a new one."""
    key = _sandbox_key(store, tables, threads, memory_limit)
    box = _kept.take(key)
    if box is None:
        box = Sandbox(store, tables, threads=threads, memory_limit=memory_limit, timeout=timeout)
    box.timeout = timeout
    reusable = False
    try:
        yield box
        reusable = True
    except InvalidInput:  # a refused or failed query leaves the connection as it was
        reusable = True
        raise
    finally:
        if reusable and not box.interrupted:
            _kept.give(key, box)
        else:
            box.close()


def table_ref(store: ObjectStore, dt: Any, name: str, namespace: str = "") -> TableRef:
    """Offer a loaded Delta table (at its loaded version) under ``name``."""
    files = tuple(dt.file_uris())
    return TableRef(name=name, files=files, schema=pa.schema(dt.schema().to_arrow()), namespace=namespace)
