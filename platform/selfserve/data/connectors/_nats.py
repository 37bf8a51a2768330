"""``nats``: JSON messages from a JetStream stream through a durable pull consumer.

Delivery is at least once. The messages of a read are acknowledged only when the caller reports the
rows committed (:meth:`NatsConnector.commit`); if the read fails, stops early or is rolled back, they
are negatively acknowledged for prompt redelivery. The consumer's position on the server is the one
state a read changes, by nature of a queue.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator, model_validator

from selfserve.data.connectors._common import (
    RowBatcher,
    SourceConfig,
    SourceConnector,
    filter_after,
    move_url_password,
    reveal,
)
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SUBJECT = re.compile(r"[^\s]+")


class NatsConfig(SourceConfig):
    """A JetStream stream, the subject to read and the durable consumer that remembers the position."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"user", "password", "token"})

    url: str = Field(description="nats://host:4222 (tls:// for TLS).")
    stream: str = Field(description="JetStream stream name.")
    subject: str | None = Field(None, description="Subject filter (wildcards allowed); a read's table may name it.")
    durable: str = Field(description="Durable consumer name; it keeps the read position between loads.")
    fetch_timeout: float = Field(
        2.0, gt=0, le=300, description="Stop when no message arrives within this many seconds."
    )
    ack_wait: float = Field(
        300.0, ge=1, le=86_400, description="Seconds the server waits for an ack before redelivering (new consumers)."
    )
    connect_timeout: float = Field(5.0, gt=0, le=120, description="Seconds to wait for the server.")
    fields: list[str] | None = Field(None, description="Message fields to keep as columns; default: all of them.")
    user: SecretStr | None = Field(None, description="User name (secret).")
    password: SecretStr | None = Field(None, description="Password (secret).")
    token: SecretStr | None = Field(None, description="Auth token (secret).")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            user = urlsplit(data["url"]).username
            data = move_url_password(data)
            if user and not data.get("user"):
                data = {**data, "user": user, "url": data["url"].replace(f"{user}@", "", 1)}
        return data

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("nats", "tls"):
            raise ValueError("the URL must start with nats:// or tls://")
        return v

    @field_validator("stream", "durable")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("use letters, digits, '-' and '_' only")
        return v

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        if v is not None and not _SUBJECT.fullmatch(v):
            raise ValueError("a subject has no blanks")
        return v


class _Loop:
    """A private event loop in its own thread: the sync generator drives nats-py's coroutines through it,
    whatever loop the caller's thread may be running."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="selfserve-nats", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            self.run(_cancel_rest())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


class NatsConnector(SourceConnector[NatsConfig]):
    """JetStream through nats-py, micro-batches of ``batch_rows`` messages, ack after each is taken."""

    kind: ClassVar[str] = "nats"
    config_model = NatsConfig

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: Any) -> None:
        super().__init__(config, secrets, settings)
        self._last_error: BaseException | None = None
        self._pending: tuple[_Loop, Any, list[Any]] | None = None

    @property
    def _where(self) -> str:
        return urlsplit(self.options.url).netloc.rsplit("@", 1)[-1]

    async def _connect(self) -> Any:
        from nats.aio.client import Client

        async def _record(exc: Exception) -> None:
            self._last_error = exc

        o = self.options
        kwargs: dict[str, Any] = {
            "servers": [o.url],
            "connect_timeout": o.connect_timeout,
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "error_cb": _record,
        }
        if o.user is not None:
            kwargs["user"] = reveal(o.user)
            kwargs["password"] = reveal(o.password)
        if o.token is not None:
            kwargs["token"] = reveal(o.token)
        nc = Client()
        try:
            await asyncio.wait_for(nc.connect(**kwargs), timeout=o.connect_timeout * 2 + 1)
        except BaseException:
            # A failed connect leaves the client's socket open: close it.
            await nc.close()
            raise
        return nc

    async def _subscribe(self, nc: Any, subject: str, batch_rows: int) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.options.ack_wait,
            max_ack_pending=max(batch_rows * 2, 1000),
        )
        js = nc.jetstream()
        return await js.pull_subscribe(subject, durable=self.options.durable, stream=self.options.stream, config=config)

    async def _fetch(self, sub: Any, count: int) -> list[Any]:
        import nats.errors

        messages: list[Any] = []
        while len(messages) < count:
            wanted = min(count - len(messages), 10_000)
            try:
                got = await sub.fetch(batch=wanted, timeout=self.options.fetch_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            messages.extend(got)
            if len(got) < wanted:
                break  # what was waiting has been taken: yield it rather than wait for more
        return messages

    @staticmethod
    async def _settle(nc: Any, messages: list[Any], ack: bool) -> None:
        for message in messages:
            await (message.ack() if ack else message.nak())
        await nc.flush()

    def _subject(self, request: ReadRequest) -> str:
        subject = request.table or self.options.subject
        if not subject:
            raise InvalidInput("give the source a subject, or name it as the read's table")
        if not _SUBJECT.fullmatch(subject):
            raise InvalidInput(f"invalid subject {subject[:80]!r}")
        return subject

    def _test(self) -> None:
        loop = _Loop()
        try:

            async def _check() -> None:
                nc = await self._connect()
                try:
                    await nc.jetstream().stream_info(self.options.stream)
                finally:
                    await nc.close()

            loop.run(_check())
        finally:
            loop.close()

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.query is not None:
            raise InvalidInput("nats sources take no query")
        subject = self._subject(request)
        self.rollback()  # a previous read never settled: hand its messages back first
        loop = _Loop()
        nc: Any = None
        held: list[Any] = []
        finished = False
        try:
            nc = loop.run(self._connect())
            sub = loop.run(self._subscribe(nc, subject, request.batch_rows))
            batcher = RowBatcher(self.options.fields, what="message field")
            while messages := loop.run(self._fetch(sub, request.batch_rows)):
                held.extend(messages)
                rows = [self._decode(m) for m in messages]
                batch = filter_after(batcher.batch(rows), request.cursor_column, request.watermark)
                if batch.num_rows:
                    yield batch
            finished = True
        finally:
            if finished:
                self._pending = (loop, nc, held)  # settled by commit() or rollback()
            else:
                self._release(loop, nc, held, ack=False)

    def _release(self, loop: _Loop, nc: Any, messages: list[Any], *, ack: bool) -> None:
        try:
            if nc is not None:
                try:
                    if messages:
                        loop.run(self._settle(nc, messages, ack=ack))
                finally:
                    loop.run(nc.close())
        finally:
            loop.close()

    def commit(self) -> None:
        """Acknowledge every message of the last read: its rows are committed."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._release(*pending, ack=True)

    def rollback(self) -> None:
        """Negatively acknowledge the last read's messages, so the server delivers them again."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._release(*pending, ack=False)

    @staticmethod
    def _decode(message: Any) -> dict[str, Any]:
        where = f"message {message.metadata.sequence.stream} on {message.subject!r}"
        try:
            record = json.loads(message.data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{where} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise InvalidInput(f"{where} is a JSON {type(record).__name__}, not an object")
        return record

    def _translate(self, exc: Exception) -> SelfServeError | None:
        import nats.errors
        import nats.js.errors

        cause = self._last_error
        if any(
            isinstance(e, nats.errors.AuthorizationError) or "authorization violation" in str(e).lower()
            for e in (exc, cause)
        ):
            return InvalidInput(f"authentication failed at NATS {self._where}: authorization violation")
        if isinstance(exc, nats.js.errors.NotFoundError):
            return InvalidInput(f"NATS {self._where}: stream {self.options.stream!r} or its consumer does not exist")
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return ServiceUnavailable(f"JetStream is not enabled or not answering at {self._where}")
        if isinstance(exc, nats.js.errors.APIError):
            return InvalidInput(f"NATS {self._where} refused the request: {exc.description or exc}")
        if isinstance(exc, nats.errors.NoServersError | nats.errors.TimeoutError | asyncio.TimeoutError | OSError):
            detail = f": {cause}" if cause is not None else ""
            return ServiceUnavailable(f"cannot reach NATS at {self._where}{detail}")
        if isinstance(exc, nats.errors.Error):
            return ServiceUnavailable(f"NATS {self._where}: {exc}")
        return None
