"""The ``nats`` connector against the local NATS JetStream (127.0.0.1:4222), and one with auth."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pyarrow as pa
import pytest

from selfserve.data.connectors import ReadRequest, build, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.integration.connectors.conftest import read_all
from tests.support import free_port

pytestmark = pytest.mark.integration

URL = "nats://127.0.0.1:4222"


async def _admin(url: str, action: Any, **auth: Any) -> Any:
    nc = await nats.connect(url, **auth)
    try:
        return await action(nc.jetstream())
    finally:
        await nc.close()


def admin(action: Any, url: str = URL, **auth: Any) -> Any:
    return asyncio.run(_admin(url, action, **auth))


def publish(subject: str, records: list[Any], url: str = URL, **auth: Any) -> None:
    async def _publish(js: Any) -> None:
        for record in records:
            data = record if isinstance(record, bytes) else json.dumps(record).encode()
            await js.publish(subject, data)

    admin(_publish, url, **auth)


@pytest.fixture
def stream(unique: str) -> Iterator[tuple[str, str]]:
    """A JetStream stream on subjects ``<unique>.>``, deleted (with its consumers) after the test."""
    name = unique.upper()

    async def create(js: Any) -> None:
        await js.add_stream(name=name, subjects=[f"{unique}.>"])

    async def delete(js: Any) -> None:
        await js.delete_stream(name)

    admin(create)
    try:
        yield name, unique
    finally:
        admin(delete)


def connector(stream: str, subject: str, durable: str = "loader", **config: Any) -> Connector:
    values = {"url": URL, "stream": stream, "subject": subject, "durable": durable, "fetch_timeout": 0.5, **config}
    cfg, secrets = split_secrets("nats", values)
    return build("nats", cfg, secrets)


def test_micro_batches_then_nothing_left(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.orders", [{"id": i, "amount": i * 2.5, "tags": ["a"]} for i in range(25)])
    c = connector(name, f"{prefix}.>")
    c.test()
    table, sizes = read_all(c, batch_rows=10)
    assert sizes == [10, 10, 5]
    assert table.column("id").to_pylist() == list(range(25))
    assert table.schema.field("amount").type == pa.float64() and table.schema.field("tags").type == pa.string()
    # The durable consumer acknowledged everything: a second read finds nothing new.
    assert read_all(c, batch_rows=10)[1] == []
    publish(f"{prefix}.orders", [{"id": 25, "amount": 1.0, "tags": []}])
    table, _ = read_all(c)
    assert table.column("id").to_pylist() == [25]


def test_unfinished_batch_is_redelivered(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.x", [{"id": i} for i in range(6)])
    c = connector(name, f"{prefix}.x")
    reader = iter(c.read(ReadRequest(batch_rows=4)))
    assert next(reader).num_rows == 4
    reader.close()  # type: ignore[attr-defined]  # ingestion failed: nothing of this batch is acked
    table, _ = read_all(c, batch_rows=4)
    assert table.column("id").to_pylist() == list(range(6))


def test_failure_after_taken_batches_hands_every_batch_back(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.x", [{"id": i} for i in range(6)])
    c = connector(name, f"{prefix}.x")
    reader = iter(c.read(ReadRequest(batch_rows=4)))
    assert next(reader).num_rows == 4
    assert next(reader).num_rows == 2  # taking more acknowledges nothing: the rows are not committed yet
    reader.close()  # type: ignore[attr-defined]  # the write failed: every message comes back
    table, _ = read_all(c, batch_rows=4)
    assert table.column("id").to_pylist() == list(range(6))


def test_messages_are_acknowledged_only_on_commit(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.x", [{"id": i} for i in range(5)])
    c = connector(name, f"{prefix}.x")
    assert sum(b.num_rows for b in c.read(ReadRequest(batch_rows=2))) == 5
    c.rollback()  # read in full, but the dataset commit failed
    assert sum(b.num_rows for b in c.read(ReadRequest(batch_rows=2))) == 5
    c.commit()
    assert list(c.read(ReadRequest(batch_rows=2))) == []
    c.commit()


def test_incremental_filter_and_fields(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.x", [{"id": i, "noise": "x"} for i in range(5)])
    c = connector(name, f"{prefix}.x", fields=["id"])
    table, _ = read_all(c, cursor_column="id", watermark=2)
    assert table.column_names == ["id"] and table.column("id").to_pylist() == [3, 4]


def test_bad_messages(stream: tuple[str, str]) -> None:
    name, prefix = stream
    publish(f"{prefix}.bad", [b"not json"])
    with pytest.raises(InvalidInput, match="message 1 on .* is not JSON"):
        read_all(connector(name, f"{prefix}.bad"))
    publish(f"{prefix}.list", [[1, 2]])
    with pytest.raises(InvalidInput, match="is a JSON list, not an object"):
        read_all(connector(name, f"{prefix}.list", durable="other"))


def test_missing_stream_and_bad_names() -> None:
    with pytest.raises(InvalidInput, match="stream 'NO_SUCH_STREAM_X'"):
        read_all(connector("NO_SUCH_STREAM_X", "nowhere.x"))
    with pytest.raises(InvalidInput, match="durable"):
        connector("S", "a.b", durable="bad.name")
    with pytest.raises(InvalidInput, match="nats://"):
        build("nats", {"url": "http://127.0.0.1:4222", "stream": "S", "durable": "d"}, {})


def test_unreachable(closed_port: int) -> None:
    c = build(
        "nats",
        {"url": f"nats://127.0.0.1:{closed_port}", "stream": "S", "subject": "a", "durable": "d", "connect_timeout": 1},
        {},
    )
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=f"cannot reach NATS at 127.0.0.1:{closed_port}"):
        read_all(c)
    assert time.monotonic() - started < 10


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[str]:
    """A second NATS server with JetStream and a user/password, on a free port."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "--user",
            "ingest",
            "--pass",
            "Ri8ht-Passw0rd",
            "-js",
            "-sd",
            str(tmp_path / "js"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_credentials(secured_nats: str) -> None:
    auth = {"user": "ingest", "password": "Ri8ht-Passw0rd"}

    async def create(js: Any) -> None:
        await js.add_stream(name="SECURED", subjects=["sec.>"])

    admin(create, secured_nats, **auth)
    publish("sec.a", [{"id": 1}], secured_nats, **auth)
    base = {"stream": "SECURED", "subject": "sec.>", "durable": "d", "fetch_timeout": 0.5}
    good = split_secrets("nats", {**base, "url": secured_nats.replace("nats://", "nats://ingest:Ri8ht-Passw0rd@")})
    assert good[1] == auth
    assert read_all(build("nats", *good))[0].column("id").to_pylist() == [1]
    wrong = build("nats", {**base, "url": secured_nats}, {"user": "ingest", "password": "Wr0ng-Passw0rd"})
    with pytest.raises(InvalidInput, match="authentication failed") as err:
        wrong.test()
    assert "Wr0ng-Passw0rd" not in str(err.value)
