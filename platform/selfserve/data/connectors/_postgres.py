"""``postgres``: a table or a SELECT, streamed with ``COPY ... TO STDOUT`` in a read-only session.

The rows come as CSV, parsed by Arrow a batch at a time, with the column types the row path would
give; values of types Arrow cannot parse are loaded by psycopg, as on the row path. The row path
(a server-side cursor, every value through Python) remains for client encodings other than UTF-8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator, model_validator

from selfserve.data.connectors._common import (
    ColumnBatcher,
    SourceConfig,
    SourceConnector,
    convert_array,
    move_url_password,
    reveal,
    select_sql,
)
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable


class PostgresConfig(SourceConfig):
    """Where the database is: a ``url`` (``postgresql://user@host:port/db``) or host/port/database/user."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    url: str | None = Field(
        None, description="postgresql://user@host:port/database (a password in it moves to secrets)."
    )
    host: str | None = Field(None, description="Server host.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    database: str | None = Field(None, description="Database name.")
    user: str | None = Field(None, description="User name; best a user granted only SELECT.")
    password: SecretStr | None = Field(None, description="Password (secret).")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="TLS mode (libpq's sslmode)."
    )
    connect_timeout: int = Field(10, ge=1, le=300, description="Seconds to wait for a connection.")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        return move_url_password(data)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("postgres", "postgresql"):
            raise ValueError("the URL must start with postgresql://")
        return v

    @model_validator(mode="after")
    def _where(self) -> PostgresConfig:
        if (self.url is None) == (self.host is None):
            raise ValueError("give a url, or a host (with database and user), not both")
        return self


# Arrow types by PostgreSQL type name; others become text.
_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "oid": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "interval": pa.duration("us"),
}
_JSON = {"json", "jsonb"}


def _identity(value: Any) -> Any:
    return value


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _json(value: Any) -> Any:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _float(value: Any) -> Any:
    return None if value is None else float(value)


def _each(convert: Callable[[Any], Any], values: Any) -> Any:
    return None if values is None else [convert(v) for v in values]


def _column_type(type_name: str, precision: int | None, scale: int | None) -> tuple[pa.DataType, Callable[[Any], Any]]:
    if type_name == "numeric":
        if precision is None:
            # An unconstrained numeric (avg(), sum() of numerics...): cast it to numeric(p,s) in the
            # query to keep exact decimals.
            return pa.float64(), _float
        decimal = pa.decimal128 if precision <= 38 else pa.decimal256
        return decimal(precision, scale or 0), _identity
    if type_name in _JSON:
        return pa.string(), _json
    if type_name in _TYPES:
        return _TYPES[type_name], _identity
    return pa.string(), _text


def _columns(description: Any) -> tuple[list[str], list[pa.DataType], list[Callable[[Any], Any]]]:
    from psycopg.postgres import types as registry

    names: list[str] = []
    types: list[pa.DataType] = []
    converters: list[Callable[[Any], Any]] = []
    elements = {info.array_oid: info.name for info in registry}
    convert: Callable[[Any], Any]
    for column in description:
        info = registry.get(column.type_code)
        # The registry also answers an array's oid with its element's info: test arrays first.
        if column.type_code in elements:
            element, element_convert = _column_type(elements[column.type_code], None, None)
            convert = partial(_each, element_convert)
            arrow = pa.list_(element)
        elif info is not None:
            arrow, convert = _column_type(info.name, column.precision, column.scale)
        else:
            arrow, convert = pa.string(), _text
        names.append(column.name)
        types.append(arrow)
        converters.append(convert)
    return names, types, converters


def _read_rows(conn: Any, query: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The row path: a named (server-side) cursor, each value loaded by psycopg and converted in Python.

    Used when the COPY path cannot be: Arrow reads UTF-8 only, and psycopg any client encoding.
    """
    with conn.cursor(name="selfserve_read") as cursor:
        cursor.itersize = batch_rows
        cursor.execute(query)
        names, types, converters = _columns(cursor.description)
        batcher = ColumnBatcher(names, types)
        while rows := cursor.fetchmany(batch_rows):
            columns = [[convert(row[i]) for row in rows] for i, convert in enumerate(converters)]
            yield batcher.batch(columns)


# Types whose COPY text Arrow's CSV reader turns into exactly the value the row path gives. Any other
# type is read from the CSV as bytes and loaded by psycopg's own loader, as on the row path.
_ARROW_PARSED = {"bool", "int2", "int4", "int8", "oid", "float4", "float8", "text", "varchar", "bpchar", "name", "uuid"}
# Their text depends on DateStyle: Arrow reads the ISO style only.
_DATETIMES = {"date", "time", "timestamp", "timestamptz"}
_CSV_ERROR = re.compile(r"^In CSV column #(\d+): (?:CSV conversion error to \S+: )?")


@dataclass(frozen=True)
class _CopyColumn:
    name: str
    type: pa.DataType  # the column's type in the batches (as on the row path)
    csv_type: pa.DataType  # what Arrow parses from the CSV
    load: Callable[[Any], Any] | None = None  # psycopg's text loader, for the columns Arrow cannot parse
    convert: Callable[[Any], Any] = _identity
    utc: bool = False  # a timestamptz sent as UTC wall time (so Arrow needs no zone offset)


@dataclass(frozen=True)
class _CopyPlan:
    """How to read a query through ``COPY (query) TO STDOUT (FORMAT csv)`` with the row path's types.

    COPY streams the rows as CSV text, one row per protocol message, with no per-row work in Python
    beyond taking the message; Arrow's CSV reader parses a batch's rows at once. PostgreSQL's CSV
    writes NULL as an unquoted empty field and an empty string as ``""``, which the reader tells apart.
    """

    columns: tuple[_CopyColumn, ...]
    schema: pa.Schema

    @classmethod
    def build(cls, conn: Any, description: Any) -> _CopyPlan | None:
        """The plan for a query's columns, or None when only the row path reads it faithfully."""
        from psycopg import adapt, pq
        from psycopg.postgres import types as registry

        if conn.info.encoding != "utf-8":
            return None
        iso = (conn.info.parameter_status("DateStyle") or "").startswith("ISO")
        loaders = adapt.Transformer(conn)
        names, types, converters = _columns(description)
        columns = []
        for column, name, type_, convert in zip(description, names, types, converters, strict=True):
            info = registry.get(column.type_code)
            # The registry answers an array's oid with its element's info: arrays are loaded by psycopg.
            type_name = info.name if info is not None and info.oid == column.type_code else None
            if info is None and conn.adapters.get_loader(column.type_code, pq.Format.TEXT) is None:
                type_name = "text"  # a type psycopg does not know: the row path keeps its text too
            native = type_name in _ARROW_PARSED or (iso and type_name in _DATETIMES)
            if type_name == "numeric":
                # Arrow parses decimal128 only, with 0 <= scale <= precision.
                native = pa.types.is_float64(type_) or (
                    pa.types.is_decimal128(type_) and 0 <= type_.scale <= type_.precision
                )
            if not native:
                load = loaders.get_loader(column.type_code, pq.Format.TEXT).load
                columns.append(_CopyColumn(name, type_, pa.binary(), load, convert))
            elif type_name == "timestamptz":
                columns.append(_CopyColumn(name, type_, pa.timestamp("us"), utc=True))
            else:
                columns.append(_CopyColumn(name, type_, type_))
        schema = pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])
        return cls(tuple(columns), schema)

    def statement(self, query: str) -> str:
        if not any(c.utc for c in self.columns):
            return f"COPY ({query}) TO STDOUT (FORMAT csv)"
        # Columns renamed by position (names may repeat); a subquery with ORDER BY keeps its order.
        aliases = [f'"_c{i}"' for i in range(len(self.columns))]
        outputs = [f"{a} AT TIME ZONE 'UTC'" if c.utc else a for a, c in zip(aliases, self.columns, strict=True)]
        select = f"SELECT {', '.join(outputs)} FROM ({query}) AS _selfserve_c({', '.join(aliases)})"
        return f"COPY ({select}) TO STDOUT (FORMAT csv)"

    def read(self, cursor: Any, query: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Run the COPY on ``cursor`` and yield batches of ``batch_rows`` rows (the last may be shorter)."""
        import pyarrow.csv as csv

        convert = csv.ConvertOptions(
            column_types={str(i): c.csv_type for i, c in enumerate(self.columns)},
            null_values=[""],  # not Arrow's default list, which holds "NULL", "NA", "NaN"...
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,  # an unquoted empty field is NULL...
            quoted_strings_can_be_null=False,  # ...and a quoted one ("") the empty string
        )
        # A single-column row of NULL is an empty line.
        parse = csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        names = [str(i) for i in range(len(self.columns))]
        conn = cursor.connection
        with cursor.copy(self.statement(query)) as copy:
            for block, rows in _copy_blocks(conn, copy, batch_rows):
                options = csv.ReadOptions(column_names=names, block_size=min(len(block) + 1, 1 << 30))
                try:
                    table = csv.read_csv(pa.py_buffer(block), options, parse, convert)
                except pa.ArrowInvalid as exc:
                    raise self._invalid(exc) from None
                del block
                if table.num_rows != rows:
                    raise SelfServeError(f"postgres source: parsed {table.num_rows} rows out of {rows} in COPY")
                yield self._batch(table)

    def _batch(self, table: pa.Table) -> pa.RecordBatch:
        arrays = []
        for column, chunked in zip(self.columns, table.columns, strict=True):
            array = chunked.chunk(0) if chunked.num_chunks == 1 else pa.concat_arrays(chunked.chunks)
            if column.utc:
                array = array.cast(column.type)
            elif column.load is not None:
                load, convert = column.load, column.convert
                values = [None if v is None else convert(load(v)) for v in array.to_pylist()]
                array = convert_array(column.name, values, column.type)
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _invalid(self, exc: Exception) -> InvalidInput:
        text = str(exc).strip().splitlines()[0]
        match = _CSV_ERROR.match(text)
        if match is None or int(match.group(1)) >= len(self.columns):
            return InvalidInput(f"PostgreSQL sent a value the platform cannot read: {text}")
        column = self.columns[int(match.group(1))]
        return InvalidInput(
            f"column {column.name!r}: a value does not fit the type {column.type}: {text[match.end() :]}"
        )


def _copy_blocks(conn: Any, copy: Any, rows: int) -> Iterator[tuple[bytearray, int]]:
    """The CSV text of a running ``COPY ... TO STDOUT``, in blocks of ``rows`` rows (the last may be shorter).

    Each protocol message is one row. The rows libpq already holds are taken straight from it (what
    ``copy.read()`` costs per row would double the read); psycopg's ``copy.read()`` waits for the
    socket when none are left. When libpq reports the end itself, the final result is collected here.
    """
    get, read = conn.pgconn.get_copy_data, copy.read
    while True:
        block = bytearray()
        extend = block.extend
        for count in range(rows):
            nbytes, data = get(1)
            if nbytes <= 0:
                if nbytes < 0:
                    _end_copy(conn)
                    data = b""
                else:  # nothing buffered: psycopg waits (and handles the end or an error if it comes)
                    data = read()
                if not data:
                    if count:
                        yield block, count
                    return
            extend(data)
        yield block, rows


def _end_copy(conn: Any) -> None:
    """Collect the final result of a COPY whose end libpq has reported; raise its error, if any."""
    from psycopg import errors, pq

    pgconn = conn.pgconn
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    if not results:
        message = (pgconn.error_message or b"").decode(errors="replace").strip()
        raise errors.OperationalError(f"receiving copy data failed: {message}")
    if results[-1].status != pq.ExecStatus.COMMAND_OK:
        raise errors.error_from_result(results[-1], encoding=conn.info.encoding)


class PostgresConnector(SourceConnector[PostgresConfig]):
    """PostgreSQL through psycopg 3: ``COPY (query) TO STDOUT`` in a READ ONLY transaction."""

    # Incremental reads are ORDER BY the cursor, so a batch's last row holds its largest value.
    cursor_ordered: ClassVar[bool] = True

    kind: ClassVar[str] = "postgres"
    config_model = PostgresConfig

    @property
    def _user(self) -> str:
        if self.options.url:
            return urlsplit(self.options.url).username or self.options.user or "(default)"
        return self.options.user or "(default)"

    @property
    def _where(self) -> str:
        if self.options.url:
            parts = urlsplit(self.options.url)
            return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        return f"{self.options.host}:{self.options.port}"

    def _connect(self) -> Any:
        import psycopg

        o = self.options
        kwargs: dict[str, Any] = {
            "connect_timeout": o.connect_timeout,
            "application_name": "selfserve",
        }
        if o.password is not None:
            kwargs["password"] = reveal(o.password)
        if o.sslmode:
            kwargs["sslmode"] = o.sslmode
        if o.url is None:
            kwargs.update(host=o.host, port=o.port)
            if o.database:
                kwargs["dbname"] = o.database
            if o.user:
                kwargs["user"] = o.user
        elif o.user:
            kwargs["user"] = o.user
        conn = psycopg.connect(o.url or "", **kwargs)
        # Every transaction psycopg opens on this connection starts with BEGIN READ ONLY. (Not the
        # default_transaction_read_only startup option: connection poolers such as PgBouncer refuse it.)
        conn.read_only = True
        return conn

    def _test(self) -> None:
        with self._connect() as conn:
            conn.execute("SELECT 1")

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        from psycopg import sql

        with self._connect() as conn:
            query, _ = select_sql(request, quote_char='"', literal=lambda v: sql.Literal(v).as_string(conn))
            with conn.cursor() as cursor:
                # The columns, without running the query: this also reports a bad query as before.
                cursor.execute(f"{query} LIMIT 0")
                if not cursor.description:
                    raise InvalidInput("the query returns no columns")
                plan = _CopyPlan.build(conn, cursor.description)
                if plan is not None:
                    yield from plan.read(cursor, query, request.batch_rows)
                    return
            yield from _read_rows(conn, query, request.batch_rows)

    def _translate(self, exc: Exception) -> SelfServeError | None:
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return None
        text = str(exc).strip()
        state = exc.sqlstate or ""
        if not state and isinstance(exc, psycopg.OperationalError):
            reason = text.split("FATAL:", 1)[1].strip() if "FATAL:" in text else text
            low = reason.lower()
            if (
                "authentication failed" in low
                or ("role" in low and "does not exist" in low)
                or "pg_hba.conf" in low
                or "password" in low
            ):
                return InvalidInput(f"authentication failed for user {self._user!r} at {self._where}: {reason}")
            if "database" in low and "does not exist" in low:
                return InvalidInput(f"PostgreSQL at {self._where}: {reason}")
            return ServiceUnavailable(f"cannot reach PostgreSQL at {self._where}: {reason}")
        first = text.splitlines()[0] if text else type(exc).__name__
        if state.startswith("28"):
            return InvalidInput(f"authentication failed for user {self._user!r} at {self._where}: {first}")
        if state.startswith(("08", "53", "57P")):
            return ServiceUnavailable(f"PostgreSQL at {self._where} is unavailable: {first}")
        if state == "25006":
            return InvalidInput(f"the source is read-only, the query tried to write: {first}")
        if state == "42601":
            return InvalidInput(f"PostgreSQL refused the read: {first} (a source query is one SELECT statement)")
        return InvalidInput(f"PostgreSQL refused the read: {first}")
