"""``mysql``: MySQL or MariaDB, a table or a SELECT, streamed unbuffered in a read-only transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

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


class MySQLConfig(SourceConfig):
    """Where the database is: a ``url`` (``mysql://user@host:port/db``) or host/port/database/user."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    url: str | None = Field(None, description="mysql://user@host:port/database (a password in it moves to secrets).")
    host: str | None = Field(None, description="Server host.")
    port: int = Field(3306, ge=1, le=65535, description="Server port.")
    database: str | None = Field(None, description="Database (schema) name.")
    user: str | None = Field(None, description="User name; best a user granted only SELECT.")
    password: SecretStr | None = Field(None, description="Password (secret).")
    connect_timeout: int = Field(10, ge=1, le=300, description="Seconds to wait for a connection.")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        return move_url_password(data)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("mysql", "mariadb"):
            raise ValueError("the URL must start with mysql:// or mariadb://")
        return v

    @model_validator(mode="after")
    def _where(self) -> MySQLConfig:
        if (self.url is None) == (self.host is None):
            raise ValueError("give a url, or a host (with database and user), not both")
        return self

    def address(self) -> dict[str, Any]:
        """host, port, user and database, from the URL or the fields."""
        if self.url is None:
            return {"host": self.host, "port": self.port, "user": self.user, "database": self.database}
        parts = urlsplit(self.url)
        database = unquote(parts.path.lstrip("/")) or self.database
        return {
            "host": parts.hostname or "localhost",
            "port": parts.port or 3306,
            "user": unquote(parts.username) if parts.username else self.user,
            "database": database,
        }


# pymysql.constants.FIELD_TYPE codes
_INTS = {1: (pa.int8(), pa.uint8()), 2: (pa.int16(), pa.uint16()), 9: (pa.int32(), pa.uint32())}
_INTS |= {3: (pa.int32(), pa.uint32()), 8: (pa.int64(), pa.uint64())}
_DECIMALS = {0, 246}
_DATES = {10, 14}
_DATETIMES = {12}
_TIMESTAMPS = {7}
_TEXTS = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}
_BINARY_CHARSET = 63
_UNSIGNED = 32


def _identity(value: Any) -> Any:
    return value


def _no_zero_date(value: Any) -> Any:
    # pymysql returns MySQL's zero dates ('0000-00-00') as text: they mean "no date".
    return None if isinstance(value, str | bytes) else value


def _bits(value: Any) -> Any:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else value


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _column(field: Any) -> tuple[pa.DataType, Callable[[Any], Any]]:
    code = field.type_code
    unsigned = bool(getattr(field, "flags", 0) & _UNSIGNED)
    if code in _INTS:
        return _INTS[code][1 if unsigned else 0], _identity
    if code == 13:  # YEAR
        return pa.int16(), _identity
    if code == 4:
        return pa.float32(), _identity
    if code == 5:
        return pa.float64(), _identity
    if code in _DECIMALS:
        scale = field.scale or 0
        precision = field.length - (1 if scale else 0) - (0 if unsigned else 1)
        precision = max(precision, scale, 1)
        decimal = pa.decimal128 if precision <= 38 else pa.decimal256
        return decimal(precision, scale), _identity
    if code in _DATES:
        return pa.date32(), _no_zero_date
    if code in _DATETIMES:
        return pa.timestamp("us"), _no_zero_date
    if code in _TIMESTAMPS:
        return pa.timestamp("us", tz="UTC"), _no_zero_date  # the session's time zone is UTC
    if code == 11:  # TIME
        return pa.duration("us"), _identity
    if code == 16:  # BIT
        return pa.int64(), _bits
    if code == 255:  # GEOMETRY
        return pa.binary(), _identity
    if code in _TEXTS:
        if getattr(field, "charsetnr", None) == _BINARY_CHARSET:
            return pa.binary(), _identity
        return pa.string(), _text
    return pa.string(), _text


def _utc_naive(value: Any) -> Any:
    """A watermark with a UTC offset as a naive UTC datetime: MySQL/MariaDB ignore offsets in literals,
    and the session's time zone is UTC. (A watermark stored as JSON comes back as ISO text.)"""
    moment = value
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    if isinstance(moment, dt.datetime) and moment.tzinfo is not None:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class MySQLConnector(SourceConnector[MySQLConfig]):
    """MySQL and MariaDB through PyMySQL: an unbuffered cursor in a READ ONLY transaction."""

    # Incremental reads are ORDER BY the cursor, so a batch's last row holds its largest value.
    cursor_ordered: ClassVar[bool] = True

    kind: ClassVar[str] = "mysql"
    config_model = MySQLConfig

    @property
    def _user(self) -> str:
        return self.options.address()["user"] or "(default)"

    @property
    def _where(self) -> str:
        address = self.options.address()
        return f"{address['host']}:{address['port']}"

    def _connect(self) -> Any:
        import pymysql
        import pymysql.cursors

        address = self.options.address()
        conn = pymysql.connect(
            host=address["host"],
            port=address["port"],
            user=address["user"],
            password=reveal(self.options.password) or "",
            database=address["database"],
            charset="utf8mb4",
            connect_timeout=self.options.connect_timeout,
            cursorclass=pymysql.cursors.SSCursor,
            autocommit=False,
        )
        try:
            with conn.cursor() as cursor:
                # Every later transaction of the session is read-only too; TIMESTAMPs come in UTC.
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
                cursor.execute("SET SESSION time_zone = '+00:00'")
                cursor.execute("START TRANSACTION READ ONLY")
        except BaseException:
            conn.close()
            raise
        return conn

    def _test(self) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
        finally:
            conn.close()

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        conn = self._connect()
        try:
            query, _ = select_sql(request, quote_char="`", literal=lambda v: conn.escape(_utc_naive(v)))
            cursor = conn.cursor()
            cursor.execute(query)
            fields = getattr(getattr(cursor, "_result", None), "fields", None) or [
                _Described(d) for d in cursor.description
            ]
            names = [d[0] for d in cursor.description]
            types, converters = zip(*(_column(f) for f in fields), strict=True) if fields else ((), ())
            batcher = ColumnBatcher(names, list(types))
            while rows := cursor.fetchmany(request.batch_rows):
                columns = [[convert(row[i]) for row in rows] for i, convert in enumerate(converters)]
                yield batcher.batch(columns)
            cursor.close()
        finally:
            # Closing the connection (not the cursor) drops an unfinished result without reading it.
            conn.close()

    def _translate(self, exc: Exception) -> SelfServeError | None:
        import pymysql

        if isinstance(exc, pymysql.err.InterfaceError):
            return ServiceUnavailable(f"lost the connection to MySQL at {self._where}: {exc}")
        if not isinstance(exc, pymysql.err.Error):
            return None
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code == 1045:
            return InvalidInput(f"authentication failed for user {self._user!r} at {self._where}: {message}")
        if code in (2002, 2003, 2005, 2006, 2013, 1040, 1053):
            return ServiceUnavailable(f"cannot reach MySQL at {self._where}: {message}")
        if code == 1792:
            return InvalidInput(f"the source is read-only, the query tried to write: {message}")
        if code == 1064:
            return InvalidInput(f"MySQL refused the read: {message} (a source query is one SELECT statement)")
        if code in (1044, 1049):
            return InvalidInput(f"MySQL at {self._where}: {message}")
        return InvalidInput(f"MySQL refused the read: {message}")


class _Described:
    """A column known only from ``cursor.description`` (no charset or flags)."""

    def __init__(self, d: Any) -> None:
        self.type_code, self.length, self.scale = d[1], d[4] or 0, d[5] or 0
