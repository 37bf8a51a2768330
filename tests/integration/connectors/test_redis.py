"""The ``redis`` connector against the local Redis (127.0.0.1:6379): hashes, sorted sets, streams."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
import redis

from selfserve.data.connectors import build, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def r(unique: str) -> Iterator[redis.Redis]:
    """A client; every key the test made under ``unique:`` is deleted after it."""
    client = redis.Redis.from_url(URL)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{unique}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def reader_user(unique: str) -> Iterator[tuple[str, str]]:
    """A Redis ACL user allowed read commands only, removed after the test."""
    client = redis.Redis.from_url(URL)
    name, password = f"{unique}_reader", "Re4der-Passw0rd"
    client.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@read", "+@connection"])
    try:
        yield name, password
    finally:
        client.acl_deluser(name)
        client.close()


def connector(url: str = URL, **secrets: str) -> Connector:
    config, found = split_secrets("redis", {"url": url, **secrets})
    return build("redis", config, found)


def test_hashes_by_pattern(r: redis.Redis, unique: str) -> None:
    for i in range(23):
        fields = {"name": f"user {i}", "age": str(20 + i)}
        if i == 17:
            fields["email"] = "u17@example.org"  # a field only one key has
        r.hset(f"{unique}:user:{i}", mapping=fields)
    r.set(f"{unique}:user:plain", "not a hash")
    c = connector()
    c.test()
    table, sizes = read_all(c, table=f"{unique}:user:*", batch_rows=10)
    assert sorted(sizes) == [3, 10, 10]
    assert table.schema.names == ["_key", "age", "email", "name"]
    assert set(table.schema.types) == {pa.string()}
    rows = {row["_key"]: row for row in table.to_pylist()}
    assert len(rows) == 23
    assert rows[f"{unique}:user:17"]["email"] == "u17@example.org"
    assert rows[f"{unique}:user:3"] == {"_key": f"{unique}:user:3", "age": "23", "email": None, "name": "user 3"}
    table, _ = read_all(c, table=f"{unique}:user:*", options={"fields": ["name"]})
    assert table.schema.names == ["_key", "name"]
    table, _ = read_all(c, table=f"{unique}:user:*", cursor_column="age", watermark=40)
    assert sorted(table.column("age").to_pylist()) == ["41", "42"]


def test_sorted_set(r: redis.Redis, unique: str) -> None:
    key = f"{unique}:scores"
    r.zadd(key, {f"m{i}": i * 1.5 for i in range(12)})
    c = connector()
    table, sizes = read_all(c, table=key, batch_rows=5)
    assert sizes == [5, 5, 2]
    assert table.schema.names == ["member", "score"] and table.schema.field("score").type == pa.float64()
    assert table.column("member").to_pylist()[:3] == ["m0", "m1", "m2"]
    table, sizes = read_all(c, table=key, cursor_column="score", watermark=12.0, batch_rows=2)
    assert table.column("member").to_pylist() == ["m9", "m10", "m11"] and sizes == [2, 1]


def test_stream(r: redis.Redis, unique: str) -> None:
    key = f"{unique}:events"
    ids = [r.xadd(key, {"kind": "click", "n": str(i)}).decode() for i in range(9)]
    r.xadd(key, {"kind": "view", "extra": "x"})
    c = connector()
    table, sizes = read_all(c, table=key, batch_rows=4)
    assert sizes == [4, 4, 2]
    assert table.schema.names == ["_id", "extra", "kind", "n"]
    assert table.column("_id").to_pylist()[:9] == ids
    table, _ = read_all(c, table=key, cursor_column="_id", watermark=ids[6], options={"fields": ["n"]})
    assert table.column("n").to_pylist() == ["7", "8", None]
    with pytest.raises(InvalidInput, match="entry id"):
        read_all(c, table=key, cursor_column="_id", watermark="yesterday")


def test_read_only_user_suffices(r: redis.Redis, unique: str, reader_user: tuple[str, str]) -> None:
    r.hset(f"{unique}:h:1", mapping={"a": "1"})
    r.zadd(f"{unique}:z", {"x": 1})
    r.xadd(f"{unique}:s", {"a": "1"})
    name, password = reader_user
    c = connector(f"redis://{name}:{password}@127.0.0.1:6379/0")
    for table in (f"{unique}:h:*", f"{unique}:z", f"{unique}:s"):
        assert read_all(c, table=table)[0].num_rows == 1


def test_wrong_password_is_masked(reader_user: tuple[str, str]) -> None:
    name, _ = reader_user
    c = connector(f"redis://{name}@127.0.0.1:6379/0", password="Not-The-Passw0rd")
    with pytest.raises(InvalidInput, match=f"authentication failed for user '{name}'") as err:
        c.test()
    assert "Not-The-Passw0rd" not in str(err.value)


def test_unreachable(closed_port: int) -> None:
    with pytest.raises(ServiceUnavailable, match=f"cannot reach Redis at 127.0.0.1:{closed_port}"):
        connector(f"redis://127.0.0.1:{closed_port}/0").test()


def test_bad_keys(r: redis.Redis, unique: str) -> None:
    r.set(f"{unique}:plain", "text")
    c = connector()
    with pytest.raises(InvalidInput, match="no redis key"):
        read_all(c, table=f"{unique}:missing")
    with pytest.raises(InvalidInput, match="is a string"):
        read_all(c, table=f"{unique}:plain")
    with pytest.raises(InvalidInput, match="WRONGTYPE"):
        read_all(c, table=f"{unique}:plain", options={"type": "zset"})
    with pytest.raises(InvalidInput, match="invalid redis read options"):
        read_all(c, table=f"{unique}:plain", options={"type": "list"})
    with pytest.raises(InvalidInput, match="no query"):
        read_all(c, query="KEYS *")
    with pytest.raises(InvalidInput, match="redis://"):
        connector("http://127.0.0.1:6379")
