"""``sqlite``: a database file under ``data.file_roots``, opened read-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pyarrow as pa
from pydantic import Field

from selfserve.data.connectors._common import (
    ColumnBatcher,
    SourceConfig,
    SourceConnector,
    identifier_parts,
    path_in_roots,
    select_sql,
)
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError


class SQLiteConfig(SourceConfig):
    """A SQLite database file on the server."""

    path: str = Field(description="Absolute path of the database file, inside a directory open to file sources.")


def _affinity(declared: str) -> pa.DataType | None:
    """SQLite's type affinity rules for a declared column type; None: take the values' own type."""
    t = declared.upper()
    if "INT" in t:
        return pa.int64()
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if t.startswith("BOOL"):
        return pa.bool_()
    if "BLOB" in t:
        return pa.binary()
    return None


class SQLiteConnector(SourceConnector[SQLiteConfig]):
    """SQLite through the standard library, with ``mode=ro`` and ``PRAGMA query_only``."""

    # Incremental reads are ORDER BY the cursor, so a batch's last row holds its largest value.
    cursor_ordered: ClassVar[bool] = True

    kind: ClassVar[str] = "sqlite"
    config_model = SQLiteConfig

    def _connect(self) -> Any:
        import sqlite3

        path = path_in_roots(self.options.path, self.settings.data.file_roots)
        uri = f"file:{quote(str(path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails early on a non-database
        except BaseException:
            conn.close()
            raise
        return conn

    def _test(self) -> None:
        self._connect().close()

    def _declared(self, conn: Any, table: str) -> dict[str, str]:
        parts = identifier_parts(table)
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else ("main", parts[0])
        rows = conn.execute(f'PRAGMA "{schema}".table_info("{name}")').fetchall()
        return {row[1]: row[2] or "" for row in rows}

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        conn = self._connect()
        try:
            sql, params = select_sql(request, quote_char='"')
            declared = self._declared(conn, request.table) if request.query is None and request.table else {}
            cursor = conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            types = [_affinity(declared.get(n, "")) for n in names]
            batcher = ColumnBatcher(names, types)
            while rows := cursor.fetchmany(request.batch_rows):
                columns = [[row[i] for row in rows] for i in range(len(names))]
                for i, type_ in enumerate(types):
                    if type_ == pa.bool_():  # SQLite stores booleans as 0 and 1
                        columns[i] = [bool(v) if isinstance(v, int) else v for v in columns[i]]
                yield batcher.batch(columns)
        finally:
            conn.close()

    def _translate(self, exc: Exception) -> SelfServeError | None:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            text = str(exc)
            if "readonly" in text or "read-only" in text or "query_only" in text:
                return InvalidInput(f"the source is read-only, the query tried to write: {text}")
            return InvalidInput(f"SQLite refused the read of {Path(self.options.path).name}: {text}")
        return None
