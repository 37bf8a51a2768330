"""The worker's own port: health for the supervisor, and nudges only from holders of the runner key.

The worker's HTTP server runs for real on a free port; no Prefect is needed for what it answers.
Submission, cancellation and crash marking run against a real Prefect server in the pipelines
integration suites.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from selfserve.pipelines.worker import WorkerHost
from selfserve.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def exchange(settings: Settings, requests: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:
    host = WorkerHost(settings)
    server = await asyncio.start_server(host.serve_http, "127.0.0.1", settings.pipelines.worker_port)
    answers = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.pipelines.worker_port}") as client:
            for method, path, headers in requests:
                answers.append(await client.request(method, path, headers=headers))
                answers[-1].extensions["nudged"] = host.nudged.is_set()
                host.nudged.clear()
    finally:
        server.close()
        host.prefect.close()
    return answers


@pytest.fixture
def settings() -> Settings:
    return Settings(pipelines={"worker_port": free_port()})  # type: ignore[arg-type]


def test_health_is_unavailable_until_the_worker_has_reached_prefect(settings: Settings) -> None:
    (health,) = asyncio.run(exchange(settings, [("GET", "/health", {})]))
    assert health.status_code == 503
    assert health.json() == {"running": 0}


def test_a_nudge_with_the_runner_key_wakes_the_worker(settings: Settings) -> None:
    key = {"Authorization": f"Bearer {settings.runner_key()}"}
    (nudge,) = asyncio.run(exchange(settings, [("POST", "/nudge", key)]))
    assert nudge.status_code == 202
    assert nudge.extensions["nudged"] is True


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2VsZnNlcnZlOng="}],
    ids=["no-key", "wrong-key", "basic-auth"],
)
def test_a_nudge_without_the_runner_key_is_refused_and_wakes_nothing(
    settings: Settings, headers: dict[str, str]
) -> None:
    (nudge,) = asyncio.run(exchange(settings, [("POST", "/nudge", headers)]))
    assert nudge.status_code == 401
    assert "runner key" in nudge.json()["error"]
    assert nudge.extensions["nudged"] is False


@pytest.mark.parametrize(("method", "path"), [("GET", "/nudge"), ("POST", "/health"), ("GET", "/runs")])
def test_anything_else_is_not_found(settings: Settings, method: str, path: str) -> None:
    key = {"Authorization": f"Bearer {settings.runner_key()}"}
    (answer,) = asyncio.run(exchange(settings, [(method, path, key)]))
    assert answer.status_code == 404
    assert answer.extensions["nudged"] is False
