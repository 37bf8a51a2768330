"""Test helpers shared by every suite (imported by conftest.py and by tests)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx

from selfserve.client import Client
from selfserve.settings import Settings, get_settings
from selfserve.store import Store

REPO = Path(__file__).resolve().parents[1]


class SyncASGITransport(httpx.BaseTransport):
    """Drives an ASGI app in-process from sync code (the SDK's httpx.Client), through an anyio portal."""

    def __init__(self, app: Any) -> None:
        self._async = httpx.ASGITransport(app=app)
        self._cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            req = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            resp = await self._async.handle_async_request(req)
            content = await resp.aread()
            return resp.status_code, resp.headers.raw, content

        status, headers, content = self._portal.call(call)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {last}")


@dataclass
class Platform:
    """A control plane on a fresh metadata DB, reachable in-process through the SDK."""

    settings: Settings
    store: Store
    app: Any
    admin_password: str
    transport: SyncASGITransport
    _clients: list[Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> Client:
        c = Client(url="http://selfserve.test", token=token or "", transport=self.transport)
        self._clients.append(c)
        return c

    def admin(self) -> Client:
        c = self.client()
        c.login("admin", self.admin_password, save=False)
        return c

    def user(self, name: str, *, admin_client: Client | None = None) -> Client:
        """Create user ``name`` (as admin) and return a client logged in as them."""
        admin = admin_client or self.admin()
        created = admin.users.create(name)
        c = self.client()
        assert created.password
        c.login(name, created.password, save=False)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.transport.close()
        self.store.dispose()


def make_platform(home: Path, db_url: str) -> Platform:
    from selfserve.server import bootstrap, create_app

    get_settings.cache_clear()
    settings = get_settings()
    store = Store(db_url)
    created = bootstrap(settings, store)
    assert created is not None, "fresh database expected"
    app = create_app(settings, store)
    return Platform(settings, store, app, created[1], SyncASGITransport(app))


@contextlib.contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A fresh, uniquely named database on the test PostgreSQL server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"selfserve_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class LiveServer:
    """The API served by uvicorn on a free port in a background thread (for CLI and browser tests)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_http(f"{self.url}/api/v1/health")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
