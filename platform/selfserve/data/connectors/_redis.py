"""``redis``: hashes (by key pattern), a sorted set or a stream, read with read-only commands only.

Commands used: PING, TYPE, SCAN, HKEYS, HGETALL, ZRANGE, ZRANGEBYSCORE, XRANGE. A Redis user limited
to ``+@read`` is enough.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from selfserve.data.connectors._common import (
    ColumnBatcher,
    SourceConfig,
    SourceConnector,
    filter_after,
    move_url_password,
    reveal,
    validation_message,
)
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable

_GLOB = re.compile(r"[*?\[]")
_STREAM_ID = re.compile(r"(\d+)(?:-(\d+))?")
_PIPELINE = 500


class RedisConfig(SourceConfig):
    """A Redis server: ``redis://[user@]host:port/db`` (``rediss://`` for TLS)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    url: str = Field(description="redis://[user@]host:port/db; a password in it moves to secrets.")
    password: SecretStr | None = Field(None, description="Password (secret).")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds a command may take.")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        return move_url_password(data)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss"):
            raise ValueError("the URL must start with redis:// or rediss://")
        return v


class RedisReadOptions(SourceConfig):
    """A read's ``options`` for redis: what the ``table`` (a key or key pattern) holds."""

    type: Literal["hash", "zset", "stream"] | None = Field(
        None, description="hash (table is a key pattern), zset or stream; default: the key's own type."
    )
    fields: list[str] | None = Field(
        None, description="Hash/stream fields to read as columns; default: every field found (one extra pass)."
    )
    scan_count: int = Field(1000, ge=1, le=100_000, description="COUNT hint for SCAN.")


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not UTF-8 text") from None


def _next_id(watermark: Any) -> str:
    """The smallest stream id after ``watermark`` (``ms-seq`` or a millisecond number)."""
    match = _STREAM_ID.fullmatch(str(watermark).strip())
    if not match:
        raise InvalidInput(f"a stream watermark is an entry id like 1700000000000-0, not {str(watermark)[:40]!r}")
    ms, seq = match.groups()
    return f"{ms}-{int(seq) + 1}" if seq is not None else f"{int(ms) + 1}-0"


class RedisConnector(SourceConnector[RedisConfig]):
    """Reads Redis hashes, sorted sets and streams into tables of text (scores as floats)."""

    kind: ClassVar[str] = "redis"
    config_model = RedisConfig

    def _client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(
            self.options.url,
            password=reveal(self.options.password),
            socket_connect_timeout=min(self.options.timeout, 10),
            socket_timeout=self.options.timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    def _test(self) -> None:
        with self._client() as client:
            client.ping()

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.query is not None:
            raise InvalidInput("redis sources take no query: name a key or key pattern as the table")
        if not request.table:
            raise InvalidInput("name a key (or, for hashes, a key pattern) as the read's table")
        try:
            options = RedisReadOptions.model_validate(request.options or {})
        except ValidationError as exc:
            raise InvalidInput(validation_message("redis read options", exc)) from None
        with self._client() as client:
            kind: str | None = options.type
            if kind is None:
                kind = "hash" if _GLOB.search(request.table) else self._key_type(client, request.table)
            if kind == "hash":
                batches = self._hashes(client, request, options)
            elif kind == "zset":
                batches = self._zset(client, request)
            else:
                batches = self._stream(client, request, options)
            yield from batches

    def _key_type(self, client: Any, key: str) -> str:
        found = _text(client.type(key), "the key type")
        if found == "none":
            raise InvalidInput(f"no redis key {key!r}")
        if found not in ("hash", "zset", "stream"):
            raise InvalidInput(f"redis key {key!r} is a {found}: only hash, zset and stream keys can be read")
        return found

    # hashes ---------------------------------------------------------------------------------

    def _scan(self, client: Any, pattern: str, count: int) -> Iterator[list[bytes]]:
        chunk: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=count, _type="hash"):
            chunk.append(key)
            if len(chunk) >= _PIPELINE:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _hash_fields(self, client: Any, pattern: str, count: int) -> list[str]:
        found: set[str] = set()
        for keys in self._scan(client, pattern, count):
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hkeys(key)
                for key, names in zip(keys, pipe.execute(), strict=True):
                    found.update(_text(n, f"a field name of hash {key!r}") for n in names)
        found.discard("_key")
        return sorted(found)

    def _hashes(self, client: Any, request: ReadRequest, options: RedisReadOptions) -> Iterator[pa.RecordBatch]:
        pattern = request.table or "*"
        fields = options.fields or self._hash_fields(client, pattern, options.scan_count)
        known = set(fields)
        names = ["_key", *fields]
        batcher = ColumnBatcher(names, [pa.string()] * len(names))
        seen: set[bytes] = set()  # SCAN may return a key twice
        rows: list[list[str | None]] = []
        for keys in self._scan(client, pattern, options.scan_count):
            keys = [k for k in keys if k not in seen]
            seen.update(keys)
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                values = pipe.execute()
            for key, mapping in zip(keys, values, strict=True):
                if not mapping:
                    continue  # deleted since the scan
                name = _text(key, "a key name")
                row = {_text(f, f"a field name of hash {name!r}"): v for f, v in mapping.items()}
                if options.fields is None and not known.issuperset(row):
                    extra = sorted(set(row) - known)[0]
                    raise InvalidInput(
                        f"hash {name!r} gained the field {extra!r} during the read: retry, or set `fields`"
                    )
                rows.append([name, *(None if (v := row.get(f)) is None else _text(v, f"{name}.{f}") for f in fields)])
                if len(rows) >= request.batch_rows:
                    yield from self._emit(batcher, rows, request)
                    rows = []
        if rows:
            yield from self._emit(batcher, rows, request)

    def _emit(self, batcher: ColumnBatcher, rows: list[list[Any]], request: ReadRequest) -> Iterator[pa.RecordBatch]:
        batch = batcher.batch([list(column) for column in zip(*rows, strict=True)])
        batch = filter_after(batch, request.cursor_column, request.watermark)
        if batch.num_rows:
            yield batch

    # sorted sets ----------------------------------------------------------------------------

    def _zset(self, client: Any, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        key = request.table
        if request.cursor_column not in (None, "score"):
            raise InvalidInput("a sorted set's cursor column is its score")
        batcher = ColumnBatcher(["member", "score"], [pa.string(), pa.float64()])
        offset = 0
        while True:
            if request.watermark is not None and request.cursor_column == "score":
                try:
                    low = f"({float(request.watermark)!r}"
                except (TypeError, ValueError):
                    raise InvalidInput(f"a score watermark is a number, not {str(request.watermark)[:40]!r}") from None
                items = client.zrangebyscore(key, low, "+inf", start=offset, num=request.batch_rows, withscores=True)
            else:
                items = client.zrange(key, offset, offset + request.batch_rows - 1, withscores=True)
            if not items:
                return
            offset += len(items)
            members = [_text(m, f"a member of {key!r}") for m, _ in items]
            yield batcher.batch([members, [float(s) for _, s in items]])
            if len(items) < request.batch_rows:
                return

    # streams --------------------------------------------------------------------------------

    def _entries(
        self, client: Any, key: str, start: str, count: int, end: str = "+"
    ) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        while True:
            entries = client.xrange(key, min=start, max=end, count=count)
            if not entries:
                return
            yield entries
            if len(entries) < count:
                return
            start = _next_id(_text(entries[-1][0], "a stream id"))

    def _stream(self, client: Any, request: ReadRequest, options: RedisReadOptions) -> Iterator[pa.RecordBatch]:
        key = request.table
        assert key is not None
        if request.cursor_column not in (None, "_id"):
            raise InvalidInput("a stream's cursor column is its entry id, _id")
        # Entries come in id order; ids do not sort as text, so the last one is the watermark.
        self.cursor_ordered = True
        start = _next_id(request.watermark) if request.watermark is not None else "-"
        fields = options.fields
        end = "+"
        if fields is None:
            # First pass: the fields (columns) of every entry up to the current last one; entries
            # added meanwhile are left for the next read.
            found: set[str] = set()
            for entries in self._entries(client, key, start, max(request.batch_rows, 1000)):
                for _, mapping in entries:
                    found.update(_text(f, f"a field name in stream {key!r}") for f in mapping)
                end = _text(entries[-1][0], "a stream id")
            found.discard("_id")
            fields = sorted(found)
            if end == "+":
                return  # nothing after the watermark
        known = set(fields)
        names = ["_id", *fields]
        batcher = ColumnBatcher(names, [pa.string()] * len(names))
        for entries in self._entries(client, key, start, request.batch_rows, end):
            rows = []
            for entry_id, mapping in entries:
                ident = _text(entry_id, "a stream id")
                row = {_text(f, f"a field name in stream {key!r}"): v for f, v in mapping.items()}
                if options.fields is None and not known.issuperset(row):
                    raise InvalidInput(f"stream {key!r} gained new fields during the read: retry, or set `fields`")
                rows.append([ident, *(None if (v := row.get(f)) is None else _text(v, f"{ident}.{f}") for f in fields)])
            yield batcher.batch([list(column) for column in zip(*rows, strict=True)])

    def _translate(self, exc: Exception) -> SelfServeError | None:
        from redis import exceptions as rx

        where = urlsplit(self.options.url).netloc.rsplit("@", 1)[-1]
        user = urlsplit(self.options.url).username or "default"
        if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
            return InvalidInput(f"authentication failed for user {user!r} at {where}: {exc}")
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
            return ServiceUnavailable(f"cannot reach Redis at {where}: {exc}")
        if isinstance(exc, rx.ResponseError):
            text = str(exc)
            if text.startswith(("WRONGPASS", "NOAUTH")) or "AUTH" in text.split(" ", 1)[0]:
                return InvalidInput(f"authentication failed for user {user!r} at {where}: {text}")
            if text.startswith("NOPERM"):
                return InvalidInput(f"the Redis user {user!r} may not read this: {text}")
            return InvalidInput(f"Redis refused the read: {text}")
        if isinstance(exc, rx.RedisError):
            return InvalidInput(f"Redis refused the read: {exc}")
        return None
