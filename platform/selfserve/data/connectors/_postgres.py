"""``postgres``: a table or a SELECT, streamed through a server-side cursor in a read-only session."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator, model_validator

from selfserve.data.connectors._common import (
    ColumnBatcher,
    SourceConfig,
    SourceConnector,
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


class PostgresConnector(SourceConnector[PostgresConfig]):
    """PostgreSQL through psycopg 3: a named (server-side) cursor in a READ ONLY transaction."""

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
            with conn.cursor(name="selfserve_read") as cursor:
                cursor.itersize = request.batch_rows
                cursor.execute(query)
                names, types, converters = _columns(cursor.description)
                batcher = ColumnBatcher(names, types)
                while rows := cursor.fetchmany(request.batch_rows):
                    columns = [[convert(row[i]) for row in rows] for i, convert in enumerate(converters)]
                    yield batcher.batch(columns)

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
