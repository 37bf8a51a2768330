"""The Prefect client's retries: what it repeats, and that repeating never starts a run twice.

The engine's slowness is injected with an httpx transport (a real Prefect server cannot be made to
time out on one chosen request); the integration suites run the client against a real server.
"""

from __future__ import annotations

import json

import httpx
import pytest

from selfserve.errors import ServiceUnavailable
from selfserve.pipelines import prefect as prefect_mod
from selfserve.pipelines.prefect import Prefect


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_mod.time, "sleep", lambda _s: None)


def client(handler: httpx.MockTransport) -> Prefect:
    p = Prefect("http://engine.invalid/api", "u:p")
    p._http = httpx.Client(base_url=p.url + "/", transport=handler)
    return p


def test_a_run_creation_that_timed_out_is_asked_again_with_the_same_idempotency_key() -> None:
    bodies: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            raise httpx.ReadTimeout("engine busy", request=request)
        return httpx.Response(201, json={"id": "run-1"})

    run = client(httpx.MockTransport(handle)).create_flow_run("dep", {"n": 1}, tags=["project:a"])
    assert run == {"id": "run-1"}
    assert len(bodies) == 2
    key = bodies[0]["idempotency_key"]
    assert isinstance(key, str) and len(key) == 32
    assert bodies[1]["idempotency_key"] == key


def test_two_run_creations_carry_different_keys() -> None:
    keys: list[object] = []

    def handle(request: httpx.Request) -> httpx.Response:
        keys.append(json.loads(request.content)["idempotency_key"])
        return httpx.Response(201, json={"id": f"run-{len(keys)}"})

    p = client(httpx.MockTransport(handle))
    p.create_flow_run("dep", {}, tags=[])
    p.create_flow_run("dep", {}, tags=[])
    assert keys[0] != keys[1]


def test_a_second_read_timeout_is_reported_as_unavailable_not_repeated_forever() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("engine busy", request=request)

    with pytest.raises(ServiceUnavailable, match="not reachable: ReadTimeout"):
        client(httpx.MockTransport(handle)).read_flow_run("r")
    assert calls == 2


def test_a_locked_engine_is_asked_again_until_it_answers() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503) if calls < 4 else httpx.Response(200, json={"id": "r"})

    assert client(httpx.MockTransport(handle)).read_flow_run("r") == {"id": "r"}
    assert calls == 4


def test_an_engine_that_is_down_is_reported_at_once() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServiceUnavailable, match="not reachable: ConnectError"):
        client(httpx.MockTransport(handle)).read_pool("ss-a")
    assert calls == 2


def test_due_pools_reads_past_a_page_of_runs_held_back_by_one_full_pool() -> None:
    offsets: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        offsets.append(body["offset"])
        if body["offset"] == 0:  # a page full of one busy project's waiting runs
            return httpx.Response(200, json=[{"work_pool_name": "ss-busy"}] * 200)
        return httpx.Response(200, json=[{"work_pool_name": "ss-busy"}, {"work_pool_name": "ss-other"}])

    assert client(httpx.MockTransport(handle)).due_pools(5) == {"ss-busy", "ss-other"}
    assert offsets == [0, 200]
