"""The runner routes (launchers, with the runner key) and the Prefect proxy (runs, with their token)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select

from selfserve.policy import tokens
from selfserve.store.tables import PipelineRun, Principal, Project
from tests.support import Platform, make_platform

RUN, OTHER_RUN = str(uuid.uuid4()), str(uuid.uuid4())
DEPLOYMENT, FLOW = str(uuid.uuid4()), str(uuid.uuid4())
PREFIX = "/api/v1/runner"


@dataclass
class Run:
    """A run the platform started: its record and the token its launcher handed it."""

    token: str
    token_id: int
    flow_run_id: str


def _http(platform: Platform) -> httpx.Client:
    return httpx.Client(base_url="http://selfserve.test", transport=platform.transport)


def _start_run(platform: Platform, flow_run_id: str = RUN) -> Run:
    """What ``runner.start`` leaves behind, without Prefect: a project, a run record and its token."""
    with platform.store.begin() as s:
        proj = Project(name=f"p-{uuid.uuid4().hex[:8]}", created_by="admin", status="ready")
        s.add(proj)
        s.flush()
        admin = s.scalar(select(Principal).where(Principal.name == "admin"))
        assert admin is not None
        row, plaintext = tokens.issue(s, admin.id, name="run", kind="run", expires="1h", project=proj)
        s.add(PipelineRun(flow_run_id=flow_run_id, project_id=proj.id, token_id=row.id))
        return Run(plaintext, row.id, flow_run_id)


def _user_token(platform: Platform) -> str:
    with platform.store.begin() as s:
        admin = s.scalar(select(Principal).where(Principal.name == "admin"))
        assert admin is not None
        return tokens.issue(s, admin.id, name="a user's")[1]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _error(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["message"])


# -- pipelines off (the unit suite's default) --------------------------------------------------------


@pytest.fixture
def off(sqlite_platform: Platform) -> Iterator[tuple[Platform, httpx.Client]]:
    with _http(sqlite_platform) as http:
        yield sqlite_platform, http


LAUNCHER_CALLS = [("start", {}), ("heartbeat", {"cpu_seconds": 1.0, "rss_bytes": 10}), ("finish", {"exit_code": 0})]


@pytest.mark.parametrize(("call", "body"), LAUNCHER_CALLS, ids=[c for c, _ in LAUNCHER_CALLS])
def test_launcher_routes_take_only_the_runner_key(off: tuple[Platform, httpx.Client], call: str, body: Any) -> None:
    platform, http = off
    key = platform.settings.runner_key()
    url = f"{PREFIX}/runs/{RUN}/{call}"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {key}x"},
        {"Authorization": f"Token {key}"},
        {"Authorization": _basic("runner", key)},
        {"Authorization": f"Bearer {_user_token(platform)}"},  # an admin's token is not the runner key
    ):
        resp = http.post(url, json=body, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert "runner key" in _error(resp)


def test_the_runner_key_and_an_unknown_run(off: tuple[Platform, httpx.Client]) -> None:
    platform, http = off
    auth = {"Authorization": f"Bearer {platform.settings.runner_key()}"}
    start = http.post(f"{PREFIX}/runs/{RUN}/start", json={}, headers=auth)
    assert start.status_code == 503 and "not enabled" in _error(start)  # Prefect would say whether it exists
    for call, body in LAUNCHER_CALLS[1:]:
        resp = http.post(f"{PREFIX}/runs/{RUN}/{call}", json=body, headers=auth)
        assert resp.status_code == 404 and "not started through the platform" in _error(resp)
    for call, body in LAUNCHER_CALLS:
        resp = http.post(f"{PREFIX}/runs/not-a-uuid/{call}", json=body, headers=auth)
        assert resp.status_code == 404, resp.text


def test_heartbeat_and_finish_of_a_run(off: tuple[Platform, httpx.Client]) -> None:
    platform, http = off
    run = _start_run(platform)
    auth = {"Authorization": f"Bearer {platform.settings.runner_key()}"}
    beat = http.post(f"{PREFIX}/runs/{RUN}/heartbeat", json={"cpu_seconds": 2.5, "rss_bytes": 2048}, headers=auth)
    assert beat.status_code == 204
    done = http.post(f"{PREFIX}/runs/{RUN}/finish", json={"exit_code": 0, "cpu_seconds": 3.0}, headers=auth)
    assert done.status_code == 204
    with platform.store.session() as s:
        record = s.scalar(select(PipelineRun).where(PipelineRun.flow_run_id == RUN))
        assert record is not None and record.finished_at is not None
        assert (record.cpu_seconds, record.max_rss_bytes, record.exit_code) == (3.0, 2048, 0)
    # The run's token ended with it.
    resp = http.get(f"{PREFIX}/prefect/flow_runs/{RUN}", headers={"Authorization": f"Bearer {run.token}"})
    assert resp.status_code == 401


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
def test_the_proxy_needs_a_runs_token(off: tuple[Platform, httpx.Client], method: str) -> None:
    platform, http = off
    url = f"{PREFIX}/prefect/flow_runs/{RUN}"
    assert http.request(method, url).status_code == 401
    assert http.request(method, url, headers={"Authorization": "Bearer ss_not_a_token"}).status_code == 401
    assert http.request(method, url, headers={"Authorization": "Basic %%%"}).status_code == 401
    user = _user_token(platform)
    for auth in (f"Bearer {user}", _basic("run", user)):
        resp = http.request(method, url, headers={"Authorization": auth})
        assert resp.status_code == 401, resp.text
        assert "belongs to no running run" in _error(resp)
    resp = http.request(method, url, headers={"Authorization": _basic("admin", user)})  # Basic is for runs only
    assert resp.status_code == 401 and "run's token is required" in _error(resp)


def test_the_proxy_is_off_with_pipelines(off: tuple[Platform, httpx.Client]) -> None:
    platform, http = off
    run = _start_run(platform)
    resp = http.get(f"{PREFIX}/prefect/flow_runs/{RUN}", headers={"Authorization": f"Bearer {run.token}"})
    assert resp.status_code == 503


def _websocket(app: Any, path: str, text: str) -> list[dict[str, Any]]:
    """Open a WebSocket on the ASGI app, send one text message; what the app sent until it closed."""
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": text}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"selfserve.test")],
        "subprotocols": ["prefect"],
        "server": ("selfserve.test", 80),
        "client": ("127.0.0.1", 1),
    }

    async def main() -> None:
        with anyio.fail_after(60):
            await app(scope, receive, send)

    anyio.run(main)
    return sent


@pytest.mark.parametrize("first", ["user", "run", "not-json", "list", "no-type"])
def test_the_event_stream_needs_a_running_runs_token(off: tuple[Platform, httpx.Client], first: str) -> None:
    platform, _ = off
    message = {
        "user": json.dumps({"type": "auth", "token": f"run:{_user_token(platform)}"}),
        "run": json.dumps({"type": "auth", "token": f"run:{_start_run(platform).token}"}),  # pipelines are off
        "not-json": "{",
        "list": "[]",
        "no-type": json.dumps({"token": "x"}),
    }[first]
    sent = _websocket(platform.app, f"{PREFIX}/prefect/events/in", message)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(sent[1]["text"])["type"] == "auth_failure"
    assert sent[2]["code"] == 1008


def test_runner_routes_are_not_in_the_openapi(off: tuple[Platform, httpx.Client]) -> None:
    _, http = off
    paths = http.get("/api/v1/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(PREFIX)]


# -- pipelines on, against a stand-in for Prefect ---------------------------------------------------


class FakePrefect:
    """The platform's Prefect client, as far as the proxy uses it."""

    def read_flow_run(self, flow_run_id: str) -> dict[str, Any] | None:
        if flow_run_id != RUN:
            return None
        return {"id": RUN, "deployment_id": DEPLOYMENT, "flow_id": FLOW, "work_pool_name": "ss-x"}

    def close(self) -> None:
        pass


@dataclass
class Upstream:
    """What reached Prefect's API through the proxy."""

    requests: list[httpx.Request]
    down: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        if request.method == "POST" and request.url.path.rstrip("/").endswith("/task_runs"):
            return httpx.Response(201, json={"id": TASK_CREATED})
        return httpx.Response(200, json={"ok": True}, headers={"x-internal": "no", "set-cookie": "a=b"})


TASK_CREATED = str(uuid.uuid4())


@pytest.fixture
def on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Platform, httpx.Client, Upstream]]:
    monkeypatch.setenv("SELFSERVE_PIPELINES__ENABLED", "true")
    monkeypatch.setenv("SELFSERVE_PIPELINES__PREFECT_URL", "http://prefect.test/api")
    platform = make_platform(tmp_path / "home", f"sqlite:///{tmp_path / 'meta.db'}")
    upstream = Upstream([])
    app = platform.app
    app.state.pipelines._prefect = FakePrefect()
    app.state.prefect_http = httpx.AsyncClient(
        base_url="http://prefect.test/api/",
        auth=("selfserve", "prefect-secret"),
        transport=httpx.MockTransport(upstream.handle),
    )
    try:
        with _http(platform) as http:
            yield platform, http, upstream
    finally:
        platform.close()


def test_a_run_reaches_its_own_flow_run(on: tuple[Platform, httpx.Client, Upstream]) -> None:
    platform, http, upstream = on
    run = _start_run(platform)
    headers = {"Authorization": _basic("run", run.token), "Cookie": "session=x", "X-Prefect-Ui": "false"}
    resp = http.get(f"{PREFIX}/prefect/flow_runs/{RUN}?a=1", headers=headers)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert "x-internal" not in resp.headers and "set-cookie" not in resp.headers
    (sent,) = upstream.requests
    assert str(sent.url) == f"http://prefect.test/api/flow_runs/{RUN}?a=1"
    # Prefect sees the platform's credentials, never the run's token or cookies.
    assert sent.headers["authorization"] == _basic("selfserve", "prefect-secret")
    assert "cookie" not in sent.headers and sent.headers["x-prefect-ui"] == "false"
    assert run.token not in str(sent.headers)


def test_a_run_is_refused_the_rest_of_prefect(on: tuple[Platform, httpx.Client, Upstream]) -> None:
    platform, http, upstream = on
    run = _start_run(platform)
    auth = {"Authorization": f"Bearer {run.token}"}
    for method, path in [
        ("GET", f"flow_runs/{OTHER_RUN}"),
        ("POST", "deployments/filter"),
        ("GET", "variables"),
        ("DELETE", f"flow_runs/{RUN}"),
        ("POST", "work_pools/ss-x/get_scheduled_flow_runs"),
        ("GET", f"flow_runs/{RUN}/../../variables"),
        ("GET", f"flow_runs/{RUN}/..%2F..%2Fvariables"),
    ]:
        resp = http.request(method, f"{PREFIX}/prefect/{path}", json={}, headers=auth)
        assert resp.status_code in (403, 404), (method, path, resp.text)
    assert upstream.requests == []


def test_a_run_may_report_on_the_tasks_it_created(on: tuple[Platform, httpx.Client, Upstream]) -> None:
    platform, http, upstream = on
    run = _start_run(platform)
    auth = {"Authorization": f"Bearer {run.token}"}
    url = f"{PREFIX}/prefect/task_runs/{TASK_CREATED}/set_state"
    assert http.post(url, json={}, headers=auth).status_code == 403
    made = http.post(f"{PREFIX}/prefect/task_runs/", json={"flow_run_id": RUN, "task_key": "t"}, headers=auth)
    assert made.status_code == 201
    assert http.post(url, json={"state": {"type": "RUNNING"}}, headers=auth).status_code == 200
    # The deployment and flow the run belongs to, as Prefect named them.
    assert http.get(f"{PREFIX}/prefect/deployments/{DEPLOYMENT}", headers=auth).status_code == 200
    assert http.get(f"{PREFIX}/prefect/flows/{FLOW}", headers=auth).status_code == 200


def test_a_run_prefect_does_not_describe_reaches_only_its_flow_run(
    on: tuple[Platform, httpx.Client, Upstream],
) -> None:
    platform, http, upstream = on
    run = _start_run(platform, OTHER_RUN)  # FakePrefect does not know it: no deployment or flow in its scope
    auth = {"Authorization": f"Bearer {run.token}"}
    assert http.get(f"{PREFIX}/prefect/flow_runs/{OTHER_RUN}", headers=auth).status_code == 200
    assert http.get(f"{PREFIX}/prefect/deployments/{DEPLOYMENT}", headers=auth).status_code == 403
    assert http.get(f"{PREFIX}/prefect/flows/{FLOW}", headers=auth).status_code == 403
    assert len(upstream.requests) == 1


def test_prefect_down_is_a_503(on: tuple[Platform, httpx.Client, Upstream]) -> None:
    platform, http, upstream = on
    run = _start_run(platform)
    upstream.down = True
    resp = http.get(f"{PREFIX}/prefect/flow_runs/{RUN}", headers={"Authorization": f"Bearer {run.token}"})
    assert resp.status_code == 503 and "not reachable" in _error(resp)


def test_a_user_token_is_refused_with_pipelines_on(on: tuple[Platform, httpx.Client, Upstream]) -> None:
    platform, http, upstream = on
    resp = http.get(f"{PREFIX}/prefect/flow_runs/{RUN}", headers={"Authorization": f"Bearer {_user_token(platform)}"})
    assert resp.status_code == 401 and "belongs to no running run" in _error(resp)
    assert upstream.requests == []
