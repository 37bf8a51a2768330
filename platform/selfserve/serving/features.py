"""Feature views: a dataset keyed by an entity column, materialized into an online store and read by key.

Materializing reads the dataset's newest version whole, checks that the key column is unique and
never null, and writes one JSON object per row (the other columns) under the key's text. The
online store keeps, per view, a pointer (the version it holds, the key's type) and the rows of that
version; a new version is written beside the old one and the pointer moves in one atomic step, so a
reader sees the old rows or the new ones, never a mix, and the version it reports is the one its
values come from. The old rows are dropped in the same step.

Two stores implement :class:`OnlineStore`: SQLite (embedded; one file per project under
``<home>/online``) and Redis (``serving.redis_url``). :class:`OnlineFeatures` is the read path of
the API process (the lookup endpoint and the predict gateway); :class:`FeatureSync` is its
background thread that materializes a view again when its dataset gets a new version, whatever
wrote that version.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import math
import re
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from selfserve.data import datasets
from selfserve.data.objectstore import ObjectStore
from selfserve.errors import Conflict, InvalidInput, NotFound, SelfServeError, ServiceUnavailable
from selfserve.policy import audit
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.serving import FeatureRow, FeatureViewCreate, FeatureViewPublic
from selfserve.settings import Settings
from selfserve.store import Store
from selfserve.store.tables import Dataset, FeatureView, Project, ServingRoute, utcnow

log = logging.getLogger(__name__)

SYNC_SECONDS = 2.0  # how often FeatureSync looks for datasets with a newer version than their views
RETRY_SECONDS = 30.0  # after a failure that was not the data's (storage or online store away)
REPAIR_ROUNDS = 15  # every this many rounds, drop data of deleted views and rewrite lost data
META_SECONDS = 1.0  # how long a process trusts what it read of a view (id, key column, key type)
WRITE_BATCH = 10_000  # rows per write to the online store
READ_CHUNK = 500  # keys per SQL IN list or Redis script call

KeyType = Literal["int", "float", "bool", "str", "text"]
Batches = Iterable[Sequence[tuple[str, str]]]  # (stored key, JSON value) pairs, written a batch at a time
KEY_TYPE_WORDS = {
    "int": "an integer",
    "float": "a floating-point",
    "bool": "a boolean",
    "str": "a text",
    "text": "a date, time or decimal",
}
# The names of the SQLite store's tables are built from integer ids and hex digits only.
_TABLE = re.compile(r"fv_[0-9]+_[0-9a-f]+")


# -- keys and values ---------------------------------------------------------------------------------


def key_type_of(arrow_type: Any) -> KeyType:
    """How a key column's values are written as text, from its Arrow type.

    Raises:
        InvalidInput: the column cannot be a key (a list, struct, map or binary column).
    """
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "str"
    if pa.types.is_temporal(t) or pa.types.is_decimal(t):
        return "text"
    raise InvalidInput(f"a {t} column cannot be a key: use a number, text, a date or a boolean column")


def stored_key(value: Any, key_type: KeyType) -> str:
    """The text a key value is stored under: ``42``, ``0.5``, ``true``, ``2024-05-01``."""
    if key_type == "int":
        return str(int(value))
    if key_type == "float":
        return repr(float(value))
    if key_type == "bool":
        return "true" if value else "false"
    if key_type == "str":
        return str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


def lookup_key(key: Any, key_type: KeyType | None) -> str | None:
    """The stored text of a key as a request gives it, or None when it cannot be one of the column's.

    Keys arrive as text in a URL or as JSON values in a predict request: ``"42"``, ``42`` and
    ``42.0`` all find the integer 42; ``"0.50"`` finds the float 0.5; ``"true"`` and ``1`` the
    boolean true. Before the view holds data (``key_type`` None) the key is taken as text.
    """
    if key_type == "int":
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            return str(key)
        number = _number(key)
        if number is None:
            return None
        if isinstance(number, int):
            return str(number)
        return str(int(number)) if number.is_integer() else None
    if key_type == "float":
        number = None if isinstance(key, bool) else _number(key)
        if number is None or not math.isfinite(number):
            return None
        return repr(float(number))
    if key_type == "bool":
        if isinstance(key, bool):
            return "true" if key else "false"
        text = str(key).strip().lower()
        return {"true": "true", "1": "true", "false": "false", "0": "false"}.get(text)
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, dt.date | dt.datetime | dt.time):
        return key.isoformat()
    return str(key)


def _number(key: Any) -> int | float | None:
    if isinstance(key, int | float):
        return key
    if not isinstance(key, str):
        return None
    text = key.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _json_default(v: Any) -> Any:
    """What orjson cannot write itself (it writes dates as ISO text and NaN as null)."""
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    return str(v)


def encode_rows(table: Any, key: str, key_type: KeyType, batch: int = WRITE_BATCH) -> Iterator[list[tuple[str, str]]]:
    """(stored key, JSON of the other columns) of every row of a pyarrow table, in batches."""
    names = [n for n in table.column_names if n != key]
    dumps = orjson.dumps
    for rb in table.to_batches(max_chunksize=batch):
        keys = rb.column(key).to_pylist()
        columns = [rb.column(n).to_pylist() for n in names]
        out = []
        for i, k in enumerate(keys):
            value = dumps({n: c[i] for n, c in zip(names, columns, strict=True)}, default=_json_default)
            out.append((stored_key(k, key_type), value.decode()))
        if out:
            yield out


def check_key(table: Any, key: str) -> KeyType:
    """The key column's type, after checking that ``key`` is a column and its values unique and present.

    Raises:
        InvalidInput: no such column, a type that cannot be a key, null (or NaN) or duplicate values.
    """
    import pyarrow.compute as pc

    if key not in table.column_names:
        raise InvalidInput(f"the dataset has no column {key!r}; its columns: {', '.join(table.column_names)}")
    column = table.column(key)
    key_type = key_type_of(column.type)
    if column.null_count:
        raise InvalidInput(f"key {key} has {_count(column.null_count, 'null value')}; every row needs a key")
    if key_type == "float":
        nan = int(pc.sum(pc.is_nan(column)).as_py() or 0)
        if nan:
            raise InvalidInput(f"key {key} has {_count(nan, 'NaN value')}; every row needs a key")
    counts = pc.value_counts(column)
    repeated = pc.greater(counts.field("counts"), 1)
    n = int(pc.sum(repeated).as_py() or 0)
    if n:
        example = pc.filter(counts.field("values"), repeated)[0].as_py()
        raise InvalidInput(f"key {key} has {_count(n, 'duplicate value')}, e.g. {stored_key(example, key_type)}")
    return key_type


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- online stores -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredView:
    """What an online store holds of a view: the dataset version, how its keys are written, its rows."""

    version: int
    key_type: KeyType
    rows: int


class OnlineStore(ABC):
    """Rows of feature views by key, one namespace per (project id, view id).

    Ids, not names, name what is stored: a name is user text, and a view deleted and created again
    under its name must not find the old rows.
    """

    kind: ClassVar[Literal["sqlite", "redis"]]
    is_local: ClassVar[bool]  # reads are local calls of microseconds: callers need not leave the event loop

    @abstractmethod
    def write(self, project_id: int, view_id: int, version: int, key_type: KeyType, batches: Batches) -> int:
        """Write a version of a view beside the one it holds, then switch to it atomically and drop the old.

        Args:
            batches: (stored key, JSON value) pairs; keys are unique.

        Returns:
            How many rows were written.

        Raises:
            ServiceUnavailable: the store failed or cannot be reached; the view keeps its old rows.
        """

    @abstractmethod
    def read(self, project_id: int, view_id: int, keys: Sequence[str]) -> tuple[StoredView, list[str | None]] | None:
        """The JSON value of each key (None where absent), and the version they all come from.

        Returns:
            None when the view holds no data.
        """

    @abstractmethod
    def meta(self, project_id: int, view_id: int) -> StoredView | None:
        """What the store holds of a view, or None."""

    @abstractmethod
    def drop(self, project_id: int, view_id: int) -> None:
        """Remove every row of a view (no error if there are none)."""

    @abstractmethod
    def views(self) -> set[tuple[int, int]]:
        """(project id, view id) of every view with data, to find those whose view was deleted."""

    def close(self) -> None:  # noqa: B027 - a store without connections has nothing to close
        """Release connections."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _key_type(value: Any) -> KeyType:
    text = _text(value)
    if text not in KEY_TYPE_WORDS:
        raise ServiceUnavailable(f"the online store holds an unknown key type {text[:20]!r}")
    return cast(KeyType, text)


def _table(name: str) -> str:
    if not _TABLE.fullmatch(name):
        raise ServiceUnavailable(f"the online store holds an unexpected table name {name[:70]!r}")
    return name


class SQLiteOnlineStore(OnlineStore):
    """One SQLite file per project (``<root>/<project id>.sqlite``, WAL), one table per view version.

    A table ``views`` points each view id at its current table ``fv_<view id>_<hex>`` (``key TEXT
    PRIMARY KEY, value TEXT``). A reader reads the pointer and the rows in one read transaction, so
    WAL gives it one snapshot: a switch and the drop of the old table that commit meanwhile stay
    invisible to it. Readers keep one connection per thread and project; each write opens its own.
    """

    kind = "sqlite"
    is_local = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _path(self, project_id: int) -> Path:
        return self.root / f"{int(project_id)}.sqlite"

    def _connect(self, project_id: int) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path(project_id), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS views (view_id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
                "version INTEGER NOT NULL, key_type TEXT NOT NULL, rows INTEGER NOT NULL)"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _reader(self, project_id: int) -> sqlite3.Connection:
        conns: dict[int, sqlite3.Connection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(project_id)
        if conn is None:
            conn = conns[project_id] = self._connect(project_id)
            with self._lock:
                self._opened.append(conn)
        return conn

    @contextmanager
    def _failures(self, project_id: int) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise ServiceUnavailable(f"the online store {self._path(project_id)} failed: {e}") from e
        except OSError as e:
            raise ServiceUnavailable(f"the online store under {self.root} cannot be written: {e}") from e

    def write(self, project_id: int, view_id: int, version: int, key_type: KeyType, batches: Batches) -> int:
        with self._failures(project_id):
            conn = self._connect(project_id)
            table = _table(f"fv_{int(view_id)}_{uuid.uuid4().hex[:16]}")
            try:
                self._drop_unused(conn, view_id)
                conn.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
                rows = 0
                for batch in batches:
                    conn.execute("BEGIN")
                    conn.executemany(f"INSERT INTO {table} (key, value) VALUES (?, ?)", batch)
                    conn.execute("COMMIT")
                    rows += len(batch)
                conn.execute("BEGIN IMMEDIATE")
                old = conn.execute("SELECT tbl FROM views WHERE view_id = ?", (view_id,)).fetchone()
                conn.execute(
                    "INSERT INTO views (view_id, tbl, version, key_type, rows) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (view_id) DO UPDATE SET tbl = excluded.tbl, version = excluded.version, "
                    "key_type = excluded.key_type, rows = excluded.rows",
                    (view_id, table, version, key_type, rows),
                )
                if old is not None and old[0] != table:
                    conn.execute(f"DROP TABLE IF EXISTS {_table(old[0])}")
                conn.execute("COMMIT")
                return rows
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                raise
            finally:
                conn.close()

    def _drop_unused(self, conn: sqlite3.Connection, view_id: int) -> None:
        """Drop tables of the view that nothing points to: a write that stopped half-way left them."""
        current = conn.execute("SELECT tbl FROM views WHERE view_id = ?", (view_id,)).fetchone()
        for table in self._tables(conn, view_id):
            if current is None or table != current[0]:
                conn.execute(f"DROP TABLE IF EXISTS {table}")

    @staticmethod
    def _tables(conn: sqlite3.Connection, view_id: int) -> list[str]:
        prefix = f"fv_{int(view_id)}_"
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return [_table(n) for (n,) in names if n.startswith(prefix) and _TABLE.fullmatch(n)]

    def read(self, project_id: int, view_id: int, keys: Sequence[str]) -> tuple[StoredView, list[str | None]] | None:
        with self._failures(project_id):
            conn = self._reader(project_id)
            if conn.in_transaction:  # a read cut short by an error elsewhere left it open
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT tbl, version, key_type, rows FROM views WHERE view_id = ?", (view_id,)
                ).fetchone()
                if row is None:
                    return None
                table = _table(row[0])
                found: dict[str, str] = {}
                if len(keys) == 1:
                    hit = conn.execute(f"SELECT value FROM {table} WHERE key = ?", (keys[0],)).fetchone()
                    if hit is not None:
                        found[keys[0]] = hit[0]
                else:
                    for start in range(0, len(keys), READ_CHUNK):
                        chunk = list(keys[start : start + READ_CHUNK])
                        marks = ",".join("?" * len(chunk))
                        found.update(conn.execute(f"SELECT key, value FROM {table} WHERE key IN ({marks})", chunk))
            finally:
                conn.execute("COMMIT")
        return StoredView(int(row[1]), _key_type(row[2]), int(row[3])), [found.get(k) for k in keys]

    def meta(self, project_id: int, view_id: int) -> StoredView | None:
        with self._failures(project_id):
            row = (
                self._reader(project_id)
                .execute("SELECT version, key_type, rows FROM views WHERE view_id = ?", (view_id,))
                .fetchone()
            )
        return None if row is None else StoredView(int(row[0]), _key_type(row[1]), int(row[2]))

    def drop(self, project_id: int, view_id: int) -> None:
        if not self._path(project_id).exists():
            return
        with self._failures(project_id):
            conn = self._connect(project_id)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM views WHERE view_id = ?", (view_id,))
                for table in self._tables(conn, view_id):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.close()

    def views(self) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        if not self.root.is_dir():
            return found
        for path in self.root.glob("*.sqlite"):
            if not path.stem.isdigit():
                continue
            project_id = int(path.stem)
            with self._failures(project_id):
                conn = self._connect(project_id)
                try:
                    rows = conn.execute("SELECT view_id FROM views").fetchall()
                finally:
                    conn.close()
            found |= {(project_id, view_id) for (view_id,) in rows}
        return found

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


# Redis: a hash per view, ``<prefix>:<project id>:<view id>`` (gen, version, key_type, rows), points at
# the hash of the version it serves, ``<prefix>:<project id>:<view id>:<gen>`` (stored key -> JSON). The
# set ``<...view>:gens`` names every version hash a write started, and ``<prefix>:views`` every view with
# data, so that cleaning up never scans the keyspace. Reading the pointer and the values is one
# script, so one round trip that cannot straddle a switch.
_READ = """
local p = redis.call('HMGET', KEYS[1], 'gen', 'version', 'key_type', 'rows')
if not p[1] then return false end
if #ARGV == 0 then return {p[1], p[2], p[3], p[4], {}} end
return {p[1], p[2], p[3], p[4], redis.call('HMGET', KEYS[1] .. ':' .. p[1], unpack(ARGV))}
"""
_SWITCH = """
local old = redis.call('HGET', KEYS[1], 'gen')
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'version', ARGV[2], 'key_type', ARGV[3], 'rows', ARGV[4])
if old and old ~= ARGV[1] then
  redis.call('UNLINK', KEYS[1] .. ':' .. old)
  redis.call('SREM', KEYS[2], old)
end
redis.call('SADD', KEYS[3], ARGV[5])
return 1
"""


class RedisOnlineStore(OnlineStore):
    """Feature views in Redis: a hash of rows per view version, switched by a pointer hash."""

    kind = "redis"
    is_local = False

    def __init__(self, url: str, *, prefix: str = "ss:fv", timeout: float = 5.0) -> None:
        import redis

        self.prefix = prefix
        self._where = _without_password(url)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0))
        self._read_script = self._redis.register_script(_READ)
        self._switch_script = self._redis.register_script(_SWITCH)
        self._views = f"{prefix}:views"

    def _pointer(self, project_id: int, view_id: int) -> str:
        return f"{self.prefix}:{int(project_id)}:{int(view_id)}"

    @contextmanager
    def _failures(self) -> Iterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as e:
            raise ServiceUnavailable(f"the online store (Redis at {self._where}) failed: {e}") from e

    def write(self, project_id: int, view_id: int, version: int, key_type: KeyType, batches: Batches) -> int:
        pointer = self._pointer(project_id, view_id)
        gens = f"{pointer}:gens"
        gen = uuid.uuid4().hex[:16]
        target = f"{pointer}:{gen}"
        with self._failures():
            current = self._redis.hget(pointer, "gen")
            unused = [g for g in self._redis.smembers(gens) if g != current]  # left by writes that stopped
            if unused:
                self._redis.unlink(*(f"{pointer}:{_text(g)}" for g in unused))
                self._redis.srem(gens, *unused)
            self._redis.sadd(gens, gen)
            rows = 0
            try:
                for batch in batches:
                    self._redis.hset(target, mapping=dict(batch))
                    rows += len(batch)
                member = f"{int(project_id)}:{int(view_id)}"
                self._switch_script(keys=[pointer, gens, self._views], args=[gen, version, key_type, rows, member])
            except BaseException:
                self._redis.unlink(target)
                self._redis.srem(gens, gen)
                raise
        return rows

    def read(self, project_id: int, view_id: int, keys: Sequence[str]) -> tuple[StoredView, list[str | None]] | None:
        pointer = self._pointer(project_id, view_id)
        chunks = [list(keys[i : i + READ_CHUNK]) for i in range(0, len(keys), READ_CHUNK)] or [[]]
        with self._failures():
            for _ in range(3):
                values: list[str | None] = []
                seen = set()
                stored = None
                for chunk in chunks:
                    got = self._read_script(keys=[pointer], args=chunk)
                    if not got:
                        return None
                    gen, version, key_type, rows, found = got
                    seen.add(gen)
                    stored = StoredView(int(version), _key_type(key_type), int(rows or 0))
                    values += [None if v is None else v.decode() for v in found]
                if len(seen) == 1 and stored is not None:
                    return stored, values
        raise ServiceUnavailable(f"feature view {view_id} kept switching versions while it was read")

    def meta(self, project_id: int, view_id: int) -> StoredView | None:
        with self._failures():
            version, key_type, rows = self._redis.hmget(
                self._pointer(project_id, view_id), "version", "key_type", "rows"
            )
        if version is None:
            return None
        return StoredView(int(version), _key_type(key_type), int(rows or 0))

    def drop(self, project_id: int, view_id: int) -> None:
        pointer = self._pointer(project_id, view_id)
        gens = f"{pointer}:gens"
        with self._failures():
            versions = [f"{pointer}:{_text(g)}" for g in self._redis.smembers(gens)]
            self._redis.unlink(pointer, gens, *versions)
            self._redis.srem(self._views, f"{int(project_id)}:{int(view_id)}")

    def views(self) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        with self._failures():
            members = self._redis.smembers(self._views)
        for raw in members:
            parts = _text(raw).split(":")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                found.add((int(parts[0]), int(parts[1])))
        return found

    def close(self) -> None:
        self._redis.close()


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.hostname or ""
    netloc = f"{u.username}:***@{host}" if u.username else f":***@{host}"
    if u.port:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def online_store_from(settings: Settings) -> OnlineStore:
    """The online store ``serving.online_store`` names: Redis, SQLite, or (auto) Redis when a URL is set.

    Raises:
        InvalidInput: Redis is asked for without ``serving.redis_url``.
    """
    cfg = settings.serving
    if cfg.online_store == "redis" or (cfg.online_store == "auto" and cfg.redis_url):
        if not cfg.redis_url:
            raise InvalidInput("serving.online_store is redis, but serving.redis_url is not set")
        return RedisOnlineStore(cfg.redis_url)
    return SQLiteOnlineStore(settings.home / "online")


# -- the read path -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ViewMeta:
    id: int
    key: str
    key_type: KeyType | None
    until: float


class OnlineFeatures:
    """Reads feature views by key for one API process; built once, with the settings and the metadata DB.

    What a view is (its id, key column and key type) is kept for ``META_SECONDS``, so that a lookup
    costs one read of the online store. The store's own answer says which version the values come
    from and how keys are written, so a view switched meanwhile is still read right.

    Args:
        online: The online store; default the one the settings name.
    """

    def __init__(
        self, settings: Settings, store: Store, online: OnlineStore | None = None, *, meta_seconds: float = META_SECONDS
    ) -> None:
        self.settings = settings
        self.store = store
        self.online = online if online is not None else online_store_from(settings)
        self.meta_seconds = meta_seconds
        self._meta: dict[tuple[int, str], _ViewMeta] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def kind(self) -> Literal["sqlite", "redis"]:
        return self.online.kind

    @property
    def is_local(self) -> bool:
        return self.online.is_local

    def lock(self, view_id: int) -> threading.Lock:
        """The lock that lets one materialization of a view run at a time in this process."""
        with self._locks_guard:
            return self._locks.setdefault(view_id, threading.Lock())

    def forget(self, project_id: int, view: str) -> None:
        """Drop what is kept of a view, after it changed in this process."""
        self._meta.pop((project_id, view), None)

    def _view(self, project_id: int, view: str, *, fresh: bool = False) -> _ViewMeta:
        now = time.monotonic()
        meta = self._meta.get((project_id, view))
        if meta is not None and meta.until > now and not fresh:
            return meta
        with self.store.session() as session:
            row = session.execute(
                select(FeatureView.id, FeatureView.key).where(
                    FeatureView.project_id == project_id, FeatureView.name == view
                )
            ).first()
        if row is None:
            self.forget(project_id, view)
            raise NotFound(f"feature view {view!r} not found")
        stored = self.online.meta(project_id, row.id)
        meta = _ViewMeta(row.id, row.key, stored.key_type if stored else None, now + self.meta_seconds)
        self._meta[(project_id, view)] = meta
        return meta

    def key_of(self, project_id: int, view: str) -> str:
        """The view's key column, which the gateway takes from each request row before a lookup.

        Raises:
            NotFound: the project has no such view.
        """
        return self._view(project_id, view).key

    def lookup_many(
        self, project_id: int, view: str, keys: Sequence[Any]
    ) -> tuple[str, int | None, list[dict[str, Any] | None]]:
        """The values of many keys, as the predict gateway fills rows from a view.

        Args:
            keys: As requests give them: text (``"42"``) or JSON values (``42``), matched to the key
                column's type.

        Returns:
            (the key column's name, the dataset version the values come from or None when the view
            holds no data yet, the values of each key without the key column or None where absent).

        Raises:
            NotFound: the project has no such view.
            ServiceUnavailable: the online store failed or cannot be reached.
        """
        meta = self._view(project_id, view)
        texts, got = self._read(project_id, meta, keys)
        if got is not None and got[0].key_type != meta.key_type:
            # The view was switched to a version whose key has another type: write the keys anew.
            meta = self._view(project_id, view, fresh=True)
            texts, got = self._read(project_id, meta, keys)
        if got is None:
            return meta.key, None, [None] * len(keys)
        stored, found = got
        loads: Callable[[str], Any] = orjson.loads
        out: list[dict[str, Any] | None] = []
        for t in texts:
            raw = None if t is None else found.get(t)
            out.append(None if raw is None else loads(raw))
        return meta.key, stored.version, out

    def _read(
        self, project_id: int, meta: _ViewMeta, keys: Sequence[Any]
    ) -> tuple[list[str | None], tuple[StoredView, dict[str, str | None]] | None]:
        """Each key's stored text (None if it cannot be one of the column's), and what the store holds of them."""
        texts = [lookup_key(k, meta.key_type) for k in keys]
        wanted = list(dict.fromkeys(t for t in texts if t is not None))
        got = self.online.read(project_id, meta.id, wanted)
        if got is None:
            return texts, None
        stored, values = got
        return texts, (stored, dict(zip(wanted, values, strict=True)))

    def lookup(self, project_id: int, view: str, key: str) -> FeatureRow:
        """One key's values, for the lookup endpoint.

        Raises:
            NotFound: no such view, or no row with this key (the message names the key).
            Conflict: the view holds no data yet (it is being materialized, or it failed).
        """
        key_column, version, [values] = self.lookup_many(project_id, view, [key])
        if version is None:
            raise Conflict(f"feature view {view!r} holds no data yet: see its state with `selfserve feature show`")
        if values is None:
            meta = self._meta.get((project_id, view))
            key_type = meta.key_type if meta else None
            why = ""
            if key_type is not None and lookup_key(key, key_type) is None:
                why = f": {key_column} is {KEY_TYPE_WORDS[key_type]} column"
            raise NotFound(f"key {key!r} not found in feature view {view!r}{why}")
        return FeatureRow(view=view, key=key, version=version, values=values)

    def close(self) -> None:
        self.online.close()


# -- materializing -----------------------------------------------------------------------------------


def _message(e: BaseException) -> str:
    if isinstance(e, SelfServeError):
        return e.message[:2000]
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:2000]


def materialize(
    session: Session,
    object_store: ObjectStore,
    features: OnlineFeatures,
    proj: Project,
    view: FeatureView,
    *,
    only_if_stale: bool = False,
) -> bool:
    """Write the newest version of the view's dataset into the online store and record it on the view.

    One materialization of a view runs at a time in the process; the view's state is committed as
    it goes (materializing, then ready or failed), so ``session`` must hold no other pending change.

    Args:
        only_if_stale: Do nothing if the view already holds the dataset's current version (another
            thread did the work while this one waited).

    Returns:
        Whether the view was written.

    Raises:
        InvalidInput: the data cannot be served (no dataset or data, no key column, null or
            duplicate keys). Recorded on the view as ``failed`` with ``last_error``.
        ServiceUnavailable: the online store failed or cannot be reached. Also recorded.
    """
    view_id = view.id
    with features.lock(view_id):
        session.expire_all()  # what another thread committed while this one waited
        current = session.get(FeatureView, view_id, populate_existing=True)
        if current is None:
            return False
        view = current
        project_id, project, name, key = proj.id, proj.name, view.name, view.key
        ds = datasets.find(session, proj, view.dataset)
        version = ds.current_version if ds is not None else None
        if only_if_stale and version is not None and version == view.materialized_version and view.state == "ready":
            return False
        try:
            if ds is None:
                raise InvalidInput(f"dataset {view.dataset!r} no longer exists in project {project!r}")
            if version is None:
                raise InvalidInput(f"dataset {view.dataset!r} holds no data yet")
            view.state = "materializing"
            session.commit()
            snap = datasets.snapshot(object_store, project, ds, version)
            table = datasets.scan(object_store, snap.files, snap.schema)
            key_type = check_key(table, key)
            rows = features.online.write(project_id, view_id, version, key_type, encode_rows(table, key, key_type))
        except Exception as e:
            session.rollback()
            _record_failure(session, view, e)
            features.forget(project_id, name)
            if isinstance(e, SelfServeError):
                raise
            raise ServiceUnavailable(f"materializing feature view {name!r} failed: {_message(e)}") from e
        view.state = "ready"
        view.materialized_version = version
        view.rows = rows
        view.materialized_at = utcnow()
        view.last_error = None
        session.commit()
        features.forget(project_id, name)
        return True


def _record_failure(session: Session, view: FeatureView, e: BaseException) -> None:
    try:
        session.refresh(view)
        view.state = "failed"
        view.last_error = _message(e)
        session.commit()
    except Exception as again:  # the view was deleted meanwhile, or the DB is away: the caller still gets `e`
        session.rollback()
        log.warning("could not record the failure of feature view %s: %s", view.id, again)


# -- what users do, through the API ------------------------------------------------------------------


def public(view: FeatureView, store: Literal["sqlite", "redis"]) -> FeatureViewPublic:
    return FeatureViewPublic(
        name=view.name,
        dataset=view.dataset,
        key=view.key,
        state=view.state,  # type: ignore[arg-type]
        materialized_version=view.materialized_version,
        rows=view.rows or 0,
        store=store,
        last_error=view.last_error,
        materialized_at=view.materialized_at,
        created_by=view.created_by,
        created_at=view.created_at,
    )


def _find(session: Session, proj: Project, name: str) -> FeatureView | None:
    return session.scalar(select(FeatureView).where(FeatureView.project_id == proj.id, FeatureView.name == name))


def _get(session: Session, proj: Project, name: str) -> FeatureView:
    view = _find(session, proj, name)
    if view is None:
        raise NotFound(f"feature view {name!r} not found in project {proj.name!r}")
    return view


def list_views(session: Session, features: OnlineFeatures, caller: Caller, project: str) -> list[FeatureViewPublic]:
    proj, _ = authorize(session, caller, "feature:read", project)
    rows = session.scalars(select(FeatureView).where(FeatureView.project_id == proj.id).order_by(FeatureView.name))
    return [public(v, features.kind) for v in rows]


def show(session: Session, features: OnlineFeatures, caller: Caller, project: str, name: str) -> FeatureViewPublic:
    proj, _ = authorize(session, caller, "feature:read", project)
    return public(_get(session, proj, name), features.kind)


def create(
    session: Session,
    object_store: ObjectStore,
    features: OnlineFeatures,
    caller: Caller,
    project: str,
    body: FeatureViewCreate,
) -> FeatureViewPublic:
    """Create a view and materialize it at once (in the request).

    A view whose data cannot be served yet (duplicate keys, the online store away) is still created,
    in state ``failed`` with the reason in ``last_error``; it is materialized again when its dataset
    gets a new version, or with :func:`materialize_now`.

    Raises:
        Conflict: the project has a view of this name.
        NotFound: the project has no such dataset.
        InvalidInput: the dataset has no column named like the key.
    """
    proj, _ = authorize(session, caller, "feature:write", project)
    if _find(session, proj, body.name) is not None:
        raise Conflict(f"feature view {body.name!r} already exists in project {project!r}")
    ds = datasets.get(session, proj, body.dataset)
    if ds.current_version is not None:
        columns = [c["name"] for c in datasets.version_row(session, ds).columns]
        if body.key not in columns:
            raise InvalidInput(
                f"dataset {ds.name!r} has no column {body.key!r} to be the key; its columns: {', '.join(columns)}"
            )
    view = FeatureView(
        project_id=proj.id,
        name=body.name,
        dataset=body.dataset,
        key=body.key,
        state="pending",
        rows=0,
        created_by=caller.name,
    )
    session.add(view)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"feature view {body.name!r} already exists in project {project!r}") from None
    # Ids can come back after a delete (SQLite reuses the highest): no rows of an older view may show.
    features.online.drop(proj.id, view.id)
    audit.record(
        session,
        caller.name,
        "feature:create",
        project=project,
        target=f"feature/{body.name}",
        detail={"dataset": body.dataset, "key": body.key},
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"feature view {body.name!r} already exists in project {project!r}") from None
    features.forget(proj.id, body.name)
    if ds.current_version is not None:
        try:
            materialize(session, object_store, features, proj, view, only_if_stale=True)
        except SelfServeError as e:
            log.warning("feature view %s/%s was created but not materialized: %s", project, body.name, e.message)
    session.refresh(view)
    return public(view, features.kind)


def materialize_now(
    session: Session,
    object_store: ObjectStore,
    features: OnlineFeatures,
    caller: Caller,
    project: str,
    name: str,
) -> FeatureViewPublic:
    """Materialize the dataset's newest version now, even if the view holds it already.

    Raises:
        NotFound: no such view.
        InvalidInput: the data cannot be served; the view keeps serving what it held.
        ServiceUnavailable: the online store failed or cannot be reached.
    """
    proj, _ = authorize(session, caller, "feature:write", project)
    view = _get(session, proj, name)
    session.commit()
    materialize(session, object_store, features, proj, view)
    session.refresh(view)
    audit.record(
        session,
        caller.name,
        "feature:materialize",
        project=project,
        target=f"feature/{name}",
        detail={"version": view.materialized_version, "rows": view.rows},
    )
    session.commit()
    return public(view, features.kind)


def delete(session: Session, features: OnlineFeatures, caller: Caller, project: str, name: str) -> None:
    """Delete a view and its rows in the online store.

    Raises:
        NotFound: no such view.
        Conflict: a serving route fills its requests from the view.
        ServiceUnavailable: the online store cannot be reached; nothing is deleted.
    """
    proj, _ = authorize(session, caller, "feature:write", project)
    view = _get(session, proj, name)
    routes = session.scalars(select(ServingRoute).where(ServingRoute.project_id == proj.id).order_by(ServingRoute.name))
    users = [r.name for r in routes if (r.spec or {}).get("feature_view") == name]
    if users:
        raise Conflict(
            f"feature view {name!r} fills the requests of route(s) {', '.join(users)}: change or delete them first"
        )
    view_id = view.id
    session.commit()  # the lock may be held by a materialization that commits to the DB: hold no DB lock meanwhile
    with features.lock(view_id):
        view = _get(session, proj, name)
        session.delete(view)
        audit.record(session, caller.name, "feature:delete", project=project, target=f"feature/{name}")
        session.flush()
        features.online.drop(proj.id, view_id)
        session.commit()
    features.forget(proj.id, name)


def lookup(session: Session, features: OnlineFeatures, caller: Caller, project: str, name: str, key: str) -> FeatureRow:
    """One row of a view by key.

    Raises:
        NotFound: no such project (for this caller), view or key.
        Conflict: the view holds no data yet.
    """
    proj, _ = authorize(session, caller, "feature:read", project)
    return features.lookup(proj.id, name, key)


# -- keeping views current ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """A view to materialize, and the dataset version that makes it due."""

    view_id: int
    project_id: int
    dataset_id: int
    version: int


class FeatureSync:
    """A background thread of the API process that keeps feature views on their dataset's newest version.

    Every ``interval`` seconds it materializes the views whose dataset's current version differs
    from the one they hold (a new write, or a dataset deleted and written again). A version whose
    data cannot be served is tried once, until the dataset changes again; a failure of the storage
    or the online store is tried again after ``RETRY_SECONDS``. Every ``REPAIR_ROUNDS`` rounds it also
    drops online rows of views that no longer exist and rewrites views whose rows were lost (a
    flushed Redis). Failures are recorded on the view and logged; the thread goes on.
    """

    def __init__(self, features: OnlineFeatures, object_store: ObjectStore, *, interval: float = SYNC_SECONDS) -> None:
        self.features = features
        self.store = features.store
        self.object_store = object_store
        self.interval = interval
        self._refused: dict[int, tuple[int, int]] = {}  # view id -> (dataset id, version) whose data was refused
        self._retry_at: dict[int, float] = {}  # view id -> when to try again after a failure of a service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="selfserve-feature-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            try:
                if rounds % REPAIR_ROUNDS == 0:
                    self.repair()
                self.run_once()
            except Exception as e:  # the DB or the online store is away for now: try again next round
                log.warning("feature view sync skipped a round: %s", _message(e))
            rounds += 1
            self._stop.wait(self.interval)

    def _due(self, session: Session) -> list[_Due]:
        stmt = (
            select(FeatureView.id, FeatureView.project_id, Dataset.id, Dataset.current_version)
            .join(Dataset, and_(Dataset.project_id == FeatureView.project_id, Dataset.name == FeatureView.dataset))
            .where(Dataset.current_version.is_not(None))
            .where(
                or_(
                    FeatureView.materialized_version.is_(None),
                    FeatureView.materialized_version != Dataset.current_version,
                )
            )
            .order_by(FeatureView.id)
        )
        return [_Due(v, p, d, version) for v, p, d, version in session.execute(stmt).tuples() if version is not None]

    def run_once(self) -> list[str]:
        """Materialize every view that is behind its dataset; returns their ``project/view`` names."""
        done: list[str] = []
        with self.store.session() as session:
            due = self._due(session)
            session.commit()
            now = time.monotonic()
            for d in due:
                if self._stop.is_set():
                    break
                if self._refused.get(d.view_id) == (d.dataset_id, d.version) or self._retry_at.get(d.view_id, 0) > now:
                    continue
                name = self._materialize(session, d, only_if_stale=True)
                if name is not None:
                    done.append(name)
        return done

    def _materialize(self, session: Session, d: _Due, *, only_if_stale: bool) -> str | None:
        """Materialize one view (rows read by id: it may have gone since it was listed); its name if written."""
        if self.features.lock(d.view_id).locked():  # a request is materializing it now
            return None
        view = session.get(FeatureView, d.view_id)
        proj = session.get(Project, d.project_id)
        if view is None or proj is None:
            return None
        name = f"{proj.name}/{view.name}"
        try:
            written = materialize(session, self.object_store, self.features, proj, view, only_if_stale=only_if_stale)
        except InvalidInput as e:
            self._refused[d.view_id] = (d.dataset_id, d.version)
            log.warning("feature view %s: version %s of its dataset is refused: %s", name, d.version, e.message)
            return None
        except Exception as e:
            self._retry_at[d.view_id] = time.monotonic() + RETRY_SECONDS
            log.warning("feature view %s could not be materialized, retrying later: %s", name, _message(e))
            return None
        self._refused.pop(d.view_id, None)
        self._retry_at.pop(d.view_id, None)
        if not written:
            return None
        log.info("feature view %s now serves version %s of its dataset", name, d.version)
        return name

    def repair(self) -> list[str]:
        """Drop online rows of deleted views; rewrite views whose rows are gone. Returns the rewritten."""
        stored = self.features.online.views()  # listed before the DB is read: a view created meanwhile stays
        rewritten: list[str] = []
        with self.store.session() as session:
            stmt = select(
                FeatureView.id, FeatureView.project_id, Dataset.id, Dataset.current_version, FeatureView.state
            ).outerjoin(
                Dataset, and_(Dataset.project_id == FeatureView.project_id, Dataset.name == FeatureView.dataset)
            )
            known = list(session.execute(stmt).tuples())
            session.commit()
            for project_id, view_id in sorted(stored - {(p, v) for v, p, _, _, _ in known}):
                self.features.online.drop(project_id, view_id)
                log.info("dropped the online rows of deleted feature view %s of project %s", view_id, project_id)
            for view_id, project_id, dataset_id, version, state in known:
                lost = state == "ready" and (project_id, view_id) not in stored
                if lost and dataset_id is not None and version is not None:
                    name = self._materialize(
                        session, _Due(view_id, project_id, dataset_id, version), only_if_stale=False
                    )
                    if name is not None:
                        rewritten.append(name)
        return rewritten
