"""The serving runtime's parts that need no BentoML: the restart schedule, the environment a deployment
gets, its HTTP endpoints and their key, finding the processes a previous runtime left, the state machine
(driven against stand-in servers on the real metadata DB), and publishing a model version, whose MLflow
is a stand-in answering as MLflow 3.17 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from selfserve.data.objectstore import LocalObjectStore
from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.ml.mlflow import MLflowAdmin
from selfserve.ml.registry import Registry
from selfserve.serving import runtime as rt
from selfserve.serving.artifacts import artifact_key, publish_model
from selfserve.settings import Settings, get_settings
from selfserve.store import Store
from selfserve.store.tables import Project, ServingDeployment

# -- the restart schedule and the deployment's environment ----------------------------------------------


def test_restarts_back_off_exponentially_up_to_the_cap() -> None:
    assert [rt.backoff(n, 30) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert [rt.backoff(n, 2.5) for n in (1, 2, 3, 10)] == [1, 2, 2.5, 2.5]
    assert rt.backoff(0, 30) == 1


def test_a_deployment_inherits_no_platform_setting_or_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "SELFSERVE_SECRET_KEY": "s3cret",
        "SELFSERVE_DATABASE__URL": "postgresql+psycopg://u:pw@db/x",
        "SELFSERVE_STORAGE__S3_SECRET_ACCESS_KEY": "k",
        "SELFSERVE_MODELS__MLFLOW_ADMIN_PASSWORD": "pw",
        "AWS_SECRET_ACCESS_KEY": "k",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "PREFECT_API_AUTH_STRING": "a:b",
        "GITHUB_TOKEN": "t",
        "SOME_API_KEY": "k",
        "PGPASSWORD": "pw",
        "SELFSERVE_CONFIG_FILE": "/etc/selfserve.toml",
        "LANG": "C.UTF-8",
    }.items():
        monkeypatch.setenv(key, value)
    settings = Settings(home=Path("/srv/ss"), serving={"workers": 2})
    inputs = [{"name": "a", "type": "double"}, {"name": "b", "type": "long"}]
    env = rt.child_environ(settings, Path("/srv/ss/serving/models/3-1/model.skops"), inputs, "3-abc")
    leaked = [k for k in env if k.startswith(("SELFSERVE_SECRET", "SELFSERVE_DATABASE", "SELFSERVE_STORAGE", "AWS_"))]
    assert not leaked
    for key in ("SELFSERVE_MODELS__MLFLOW_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"):
        assert key not in env
    assert "GITHUB_TOKEN" not in env and "SOME_API_KEY" not in env and "PGPASSWORD" not in env
    assert env["PATH"] == os.environ["PATH"] and env["LANG"] == "C.UTF-8"
    assert env["SELFSERVE_CONFIG_FILE"] == "/etc/selfserve.toml"
    assert env[rt.MODEL_FILE_ENV] == "/srv/ss/serving/models/3-1/model.skops"
    assert json.loads(env[rt.INPUTS_ENV]) == inputs
    assert env[rt.RUN_ENV] == "3-abc"
    assert env["SELFSERVE_SERVING__WORKERS"] == "2"
    assert env["BENTOML_HOME"] == "/srv/ss/serving/bentoml"


def test_the_service_reads_the_variables_the_runtime_writes() -> None:
    bento = _bento_service()
    assert (bento.MODEL_FILE_ENV, bento.INPUTS_ENV) == (rt.MODEL_FILE_ENV, rt.INPUTS_ENV)
    module, _, name = rt.BENTO_SERVICE.partition(":")
    assert module == bento.__name__ and getattr(bento, name) is bento.Deployment


def _bento_service() -> Any:
    # BentoML's own imports raise a DeprecationWarning (pathspec) that is none of this suite's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import selfserve.serving.bento_service as bento
    return bento


def test_rows_become_a_frame_of_the_signature_or_are_refused() -> None:
    bento = _bento_service()
    columns = [
        {"name": "x", "type": "double"},
        {"name": "n", "type": "long"},
        {"name": "city", "type": "string"},
        {"name": "vip", "type": "boolean"},
    ]
    frame = bento.rows_frame(
        [
            {"vip": True, "city": "Oslo", "n": 3, "x": 1, "extra": "ignored"},
            {"x": None, "n": 4.0, "city": None, "vip": False},
        ],
        columns,
    )
    assert list(frame.columns) == ["x", "n", "city", "vip"]
    assert [str(t) for t in frame.dtypes] == ["float64", "int64", "object", "bool"]
    assert frame["n"].tolist() == [3, 4] and frame["x"].isna().tolist() == [False, True]
    bad = [
        ([{"x": 1.0, "n": 1, "city": "a"}], "row 0 lacks the column(s) vip"),
        ([{"x": "one", "n": 1, "city": "a", "vip": True}], "column 'x' takes double values, not 'one'"),
        ([{"x": 1, "n": 1.5, "city": "a", "vip": True}], "column 'n' takes long values, not 1.5"),
        ([{"x": 1, "n": 2**70, "city": "a", "vip": True}], "column 'n' takes long values"),
        ([{"x": 1, "n": True, "city": "a", "vip": True}], "column 'n' takes long values, not True"),
        ([{"x": 1, "n": 1, "city": 7, "vip": True}], "column 'city' takes string values, not 7"),
        ([{"x": 1, "n": 1, "city": "a", "vip": "yes"}], "column 'vip' takes boolean values"),
    ]
    for rows, message in bad:
        with pytest.raises(bento.RowsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            bento.rows_frame(rows, columns)


def test_predictions_are_plain_json() -> None:
    import numpy as np

    bento = _bento_service()
    assert bento.plain(np.array([1, 0, 1])) == [1, 0, 1]
    assert bento.plain(np.array([0.5, np.nan, np.inf])) == [0.5, None, None]
    assert bento.plain(np.array(["yes", "no"], dtype=object)) == ["yes", "no"]
    assert bento.plain(np.array([[0.1, 0.9]])) == [[0.1, 0.9]]
    assert json.dumps(bento.plain(np.array([np.int64(3), np.float32(1.5)])))


def test_tail_lines_reads_the_end_of_a_large_log(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(200_000)))
    assert rt.tail_lines(path, 3) == ["line 199997", "line 199998", "line 199999"]
    small = tmp_path / "small.log"
    small.write_text("a\nb")
    assert rt.tail_lines(small, 10) == ["a", "b"]
    (tmp_path / "empty.log").write_text("")
    assert rt.tail_lines(tmp_path / "empty.log", 5) == []
    with pytest.raises(FileNotFoundError):
        rt.tail_lines(tmp_path / "missing.log", 5)


def test_up_runs_the_runtime_when_models_and_serving_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfserve.runtime import services

    monkeypatch.setenv("SELFSERVE_MODELS__ENABLED", "true")
    monkeypatch.setenv("SELFSERVE_SERVING__RUNTIME_PORT", "9705")
    get_settings.cache_clear()
    spec = next(s for s in services(get_settings()) if s.name == "serving")
    assert spec.argv == (sys.executable, "-m", "selfserve.serving.runtime")
    assert (spec.port, spec.port_setting, spec.health_url) == (
        9705,
        "serving.runtime_port",
        "http://127.0.0.1:9705/health",
    )
    assert spec.env["SELFSERVE_SERVING__RUNTIME_PORT"] == "9705" and spec.env["SELFSERVE_SERVING__ENABLED"] == "true"
    api = next(s for s in services(get_settings()) if s.name == "api")
    assert api.env["SELFSERVE_SERVING__RUNTIME_PORT"] == "9705", "the API must find the runtime it nudges"

    monkeypatch.setenv("SELFSERVE_SERVING__ENABLED", "false")
    get_settings.cache_clear()
    assert "serving" not in {s.name for s in services(get_settings())}
    monkeypatch.setenv("SELFSERVE_SERVING__ENABLED", "true")
    monkeypatch.setenv("SELFSERVE_MODELS__ENABLED", "false")
    get_settings.cache_clear()
    assert "serving" not in {s.name for s in services(get_settings())}, "nothing to serve without the registry"


# -- HTTP ---------------------------------------------------------------------------------------------------


def _http(runtime: rt.ServingRuntime, calls: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        server = await asyncio.start_server(runtime.serve_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
                return await calls(client)
        finally:
            server.close()

    return asyncio.run(main())


def test_nudge_and_logs_need_the_runner_key() -> None:
    settings = get_settings()
    runtime = rt.ServingRuntime(settings)
    log = runtime.log_path(7)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    key = {"Authorization": f"Bearer {settings.runner_key()}"}

    async def calls(c: httpx.AsyncClient) -> dict[str, Any]:
        seen: dict[str, Any] = {"health before": (await c.get("/health")).status_code}
        runtime.synced = True
        seen["health"] = (await c.get("/health")).json()
        seen["health status"] = (await c.get("/health")).status_code
        seen["nudge without key"] = (await c.post("/nudge")).status_code
        seen["nudge with a wrong key"] = (await c.post("/nudge", headers={"Authorization": "Bearer nope"})).status_code
        seen["logs without key"] = (await c.get("/deployments/7/logs")).status_code
        seen["logs with a wrong key"] = (
            await c.get("/deployments/7/logs", headers={"Authorization": f"Basic {settings.runner_key()}"})
        ).status_code
        seen["nudged before"] = runtime.nudged.is_set()
        seen["nudge"] = (await c.post("/nudge", headers=key)).status_code
        seen["nudged"] = runtime.nudged.is_set()
        seen["logs"] = (await c.get("/deployments/7/logs", params={"tail": 3}, headers=key)).json()
        seen["default tail"] = len((await c.get("/deployments/7/logs", headers=key)).json()["lines"])
        seen["tail 0"] = (await c.get("/deployments/7/logs", params={"tail": 0}, headers=key)).status_code
        seen["tail x"] = (await c.get("/deployments/7/logs", params={"tail": "x"}, headers=key)).status_code
        seen["no log"] = (await c.get("/deployments/8/logs", headers=key)).status_code
        seen["other path"] = (await c.get("/deployments/7/../../etc/passwd", headers=key)).status_code
        seen["get nudge"] = (await c.get("/nudge", headers=key)).status_code
        return seen

    seen = _http(runtime, calls)
    assert seen["health before"] == 503
    assert seen["health status"] == 200 and seen["health"] == {"deployments": 0, "ready": 0}
    for name in ("nudge without key", "nudge with a wrong key", "logs without key", "logs with a wrong key"):
        assert seen[name] == 401, name
    assert not seen["nudged before"] and seen["nudge"] == 202 and seen["nudged"]
    assert seen["logs"] == {"lines": ["line 47", "line 48", "line 49"]}
    assert seen["default tail"] == 50
    assert seen["tail 0"] == seen["tail x"] == 422
    assert seen["no log"] == seen["other path"] == 404
    assert seen["get nudge"] == 405


# -- processes left behind --------------------------------------------------------------------------------

SLEEPER = "import time; time.sleep(120)"


@pytest.fixture
def spawned() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLEEPER, *args],
            env={**os.environ, **(env or {})},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def test_leftovers_are_this_platforms_bentoml_processes_only(
    tmp_path: Path, spawned: Callable[..., subprocess.Popen[bytes]]
) -> None:
    root = tmp_path / "home" / "serving" / "models"
    server = spawned("bentoml", "serve", rt.BENTO_SERVICE, env={rt.MODEL_FILE_ENV: str(root / "1-2" / "model.skops")})
    worker = spawned("_bentoml_impl.worker.service", env={rt.MODEL_FILE_ENV: str(root / "1-2" / "model.skops")})
    recorded = spawned("bentoml", "serve", rt.BENTO_SERVICE)  # a row's pid, its environment unknown
    other_home = spawned("bentoml", env={rt.MODEL_FILE_ENV: str(tmp_path / "other" / "serving" / "models" / "x")})
    not_bentoml = spawned("something-else", env={rt.MODEL_FILE_ENV: str(root / "1-2" / "model.skops")})
    reused_pid = spawned("unrelated")  # a recorded pid that is now another program
    time.sleep(0.3)  # /proc/<pid>/cmdline is the interpreter's until exec finishes

    found = rt.leftovers(root, recorded=[recorded.pid, reused_pid.pid, 999_999_999])
    assert found == sorted([server.pid, worker.pid, recorded.pid])
    assert not {other_home.pid, not_bentoml.pid, reused_pid.pid} & set(found)

    assert rt.end_processes(found, grace=2.0) == []
    for proc in (server, worker, recorded):
        assert proc.wait(5) == -signal.SIGTERM
    for proc in (other_home, not_bentoml, reused_pid):
        assert proc.poll() is None


def test_one_start_is_found_by_its_token_and_killed_when_it_ignores_sigterm(
    spawned: Callable[..., subprocess.Popen[bytes]],
) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, "-c", stubborn, "bentoml"],
        env={**os.environ, rt.RUN_ENV: "5-feed"},
        start_new_session=True,
    )
    other = spawned("bentoml", env={rt.RUN_ENV: "5-beef"})
    try:
        time.sleep(0.3)
        assert rt.run_processes("5-feed") == [proc.pid]
        begun = time.monotonic()
        assert rt.end_processes([], grace=0.5, find=lambda: rt.run_processes("5-feed")) == []
        assert proc.wait(5) == -signal.SIGKILL
        assert time.monotonic() - begun < 5
        assert other.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# -- the state machine, with stand-in servers --------------------------------------------------------------

FAKE_SERVER = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("stand-in server on port", sys.argv[1], flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
CRASHING = "import sys; print('cannot load the model: boom', flush=True); sys.exit(3)"
# What BentoML does when the service cannot load its model: the worker fails, is started again, forever.
UNLOADABLE = (
    "import time\n"
    "while True:\n"
    "    print('Traceback (most recent call last):\\nValueError: not a model', flush=True)\n"
    "    print('[ERROR] [entry_service:Deployment:1] Application startup failed. Exiting.', flush=True)\n"
    "    time.sleep(0.2)\n"
)
# Answers its first three health checks, then 503: a server that stops answering without exiting.
FALTERING = FAKE_SERVER.replace(
    'self.send_response(200 if self.path == "/readyz" else 404)',
    "Handler.n = getattr(Handler, 'n', 0) + 1; self.send_response(200 if Handler.n <= 3 else 503)",
)


class StandIn(rt.ServingRuntime):
    """The runtime with its servers replaced: a tiny HTTP server, or a program that exits at once."""

    program = FAKE_SERVER

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", self.program, str(port), "bentoml"]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = Store(db_url)
    store.migrate()
    objects = LocalObjectStore(tmp_path / "storage")
    objects.put_bytes("serving/p/clf/1/model.skops", b"model bytes")
    with store.begin() as s:
        project = Project(name="p", created_by="admin", status="ready")
        s.add(project)
        s.flush()
        project_id = project.id
    settings = Settings(
        home=tmp_path / "home",
        serving={"poll_seconds": 0.05, "health_seconds": 0.1, "restart_backoff_max": 0.2, "ready_timeout": 20},
    )
    yield {"store": store, "objects": objects, "project_id": project_id, "settings": settings}
    store.dispose()


def _insert(world: dict[str, Any], name: str, artifact: str = "serving/p/clf/1/model.skops") -> int:
    with world["store"].begin() as s:
        row = ServingDeployment(
            project_id=world["project_id"],
            name=name,
            model="clf",
            version=1,
            model_ref="clf@champion",
            artifact=artifact,
            signature=[{"name": "a", "type": "double"}],
            state="pending",
            created_by="admin",
        )
        s.add(row)
        s.flush()
        return int(row.id)


def _row(world: dict[str, Any], deployment_id: int) -> ServingDeployment | None:
    with world["store"].session() as s:
        return s.get(ServingDeployment, deployment_id)


async def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met")


def _drive(runtime: rt.ServingRuntime, scenario: Callable[[], Any]) -> Any:
    async def main() -> Any:
        runtime._http = httpx.AsyncClient(timeout=1.0, trust_env=False)
        loop = asyncio.create_task(runtime.poll())
        try:
            return await scenario()
        finally:
            runtime.stopping.set()
            await loop
            await runtime.shutdown()
            await runtime._http.aclose()

    return asyncio.run(main())


def test_a_deployment_is_started_restarted_after_a_crash_and_stopped_when_deleted(world: dict[str, Any]) -> None:
    runtime = StandIn(world["settings"], world["store"], world["objects"])
    dep = _insert(world, "web")

    async def scenario() -> None:
        ready = await _until(lambda: (r := _row(world, dep)) and r.state == "ready" and r)
        assert ready.port and ready.pid and ready.ready_at is not None and ready.restarts == 0
        assert (runtime.models_root / f"{dep}-1" / "model.skops").read_bytes() == b"model bytes"
        first_pid = ready.pid

        os.kill(first_pid, signal.SIGKILL)
        states: set[str] = set()

        def back() -> Any:
            r = _row(world, dep)
            states.add(r.state)
            return r.state == "ready" and r.pid != first_pid and r

        again = await _until(back)
        assert "restarting" in states
        assert again.restarts == 1 and "exited with code -9" in again.last_error
        assert "stand-in server on port" in again.last_error  # the log's last lines
        assert again.port == ready.port  # the port was free again, so the route's address holds

        with world["store"].begin() as s:
            s.delete(s.get(ServingDeployment, dep))
        await _until(lambda: not rt._alive(again.pid) and dep not in runtime.children)
        await _until(lambda: not (runtime.models_root / f"{dep}-1").exists() and not runtime.log_path(dep).exists())

    _drive(runtime, scenario)


def test_a_deployment_that_never_starts_fails_after_a_few_tries(world: dict[str, Any]) -> None:
    runtime = StandIn(world["settings"], world["store"], world["objects"])
    runtime.program = CRASHING
    dep = _insert(world, "broken")
    missing = _insert(world, "orphan", artifact="serving/p/gone/1/model.skops")

    async def scenario() -> None:
        failed = await _until(lambda: (r := _row(world, dep)) and r.state == "failed" and r)
        assert failed.restarts == rt.MAX_FAILED_STARTS and failed.pid is None
        assert "exited with code 3" in failed.last_error and "cannot load the model: boom" in failed.last_error
        gone = await _until(lambda: (r := _row(world, missing)) and r.state == "failed" and r)
        assert "serving/p/gone/1/model.skops" in gone.last_error and "not in the platform's storage" in gone.last_error
        await asyncio.sleep(0.3)  # a failed deployment is left alone
        assert _row(world, dep).state == "failed" and dep not in runtime.children

        runtime.program = FAKE_SERVER  # asked for again: it is tried again
        with world["store"].begin() as s:
            s.get(ServingDeployment, dep).state = "pending"
        await _until(lambda: (r := _row(world, dep)) and r.state == "ready")

    _drive(runtime, scenario)


def test_a_service_that_cannot_load_its_model_is_not_waited_for(world: dict[str, Any]) -> None:
    runtime = StandIn(world["settings"], world["store"], world["objects"])
    runtime.program = UNLOADABLE
    dep = _insert(world, "unloadable")

    async def scenario() -> None:
        begun = time.monotonic()
        failed = await _until(lambda: (r := _row(world, dep)) and r.state == "failed" and r)
        assert time.monotonic() - begun < world["settings"].serving.ready_timeout
        assert "its model could not be loaded" in failed.last_error and "ValueError: not a model" in failed.last_error

    _drive(runtime, scenario)


def test_a_server_that_stops_answering_is_restarted(world: dict[str, Any]) -> None:
    runtime = StandIn(world["settings"], world["store"], world["objects"])
    runtime.program = FALTERING
    dep = _insert(world, "flaky")

    async def scenario() -> None:
        first = await _until(lambda: (r := _row(world, dep)) and r.state == "ready" and r)
        again = await _until(lambda: (r := _row(world, dep)) and r.restarts >= 1 and r)
        assert f"failed {rt.HEALTH_FAILURES} health checks in a row" in again.last_error
        assert not rt._alive(first.pid)

    _drive(runtime, scenario)


def test_a_state_the_db_did_not_take_is_written_again(world: dict[str, Any]) -> None:
    class Flaky(StandIn):
        lost = 0

        def write_row(self, deployment_id: int, **values: Any) -> None:
            if values.get("state") == "ready" and not self.lost:
                self.lost += 1
                raise OSError("the database went away")
            super().write_row(deployment_id, **values)

    runtime = Flaky(world["settings"], world["store"], world["objects"])
    dep = _insert(world, "web")

    async def scenario() -> None:
        row = await _until(lambda: (r := _row(world, dep)) and r.state == "ready" and r)
        assert runtime.lost == 1 and row.pid == runtime.children[dep].process.pid

    _drive(runtime, scenario)


def test_shutdown_stops_the_servers_and_marks_them_pending(world: dict[str, Any]) -> None:
    runtime = StandIn(world["settings"], world["store"], world["objects"])
    dep = _insert(world, "web")
    pids: list[int] = []

    async def scenario() -> None:
        ready = await _until(lambda: (r := _row(world, dep)) and r.state == "ready" and r)
        pids.append(ready.pid)

    _drive(runtime, scenario)
    assert not rt._alive(pids[0])
    row = _row(world, dep)
    assert row is not None and row.state == "pending" and row.pid is None


# -- publishing a model version ----------------------------------------------------------------------------

PROJECT = "churn"
MODEL_ID = "m-0123456789abcdef"
ROOT = f"workspaces/{PROJECT}/1/models/{MODEL_ID}/artifacts"
SIGNATURE = [{"type": "double", "name": c, "required": True} for c in ("a", "b", "c", "d")]


def _mlmodel(fmt: str = "skops", signature: Any = SIGNATURE, pickled: str = "model.skops") -> str:
    import yaml

    meta: dict[str, Any] = {
        "flavors": {
            "python_function": {"loader_module": "mlflow.sklearn", "model_path": pickled},
            "sklearn": {"pickled_model": pickled, "serialization_format": fmt, "skops_trusted_types": ["math.sqrt"]},
        },
        "mlflow_version": "3.17.2",
        "model_id": MODEL_ID,
    }
    if signature is not None:
        meta["signature"] = {"inputs": json.dumps(signature), "outputs": None}
    return yaml.safe_dump(meta)


@pytest.fixture(scope="module")
def skops_files() -> dict[str, bytes]:
    import math

    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    X = rng.random((40, 4))
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    return {"good": skops.io.dumps(model), "untrusted": skops.io.dumps(FunctionTransformer(func=math.sqrt))}


class FakeRegistry:
    """MLflow's REST answers for one workspace: versions by number, each an MLmodel and a model file."""

    def __init__(self, versions: dict[int, tuple[str, bytes]], aliases: dict[str, int]) -> None:
        self.versions = versions
        self.aliases = aliases
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("X-MLflow-Workspace") != PROJECT:
            return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no workspace"})
        path, q = request.url.path, request.url.params
        missing = httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"})
        if path == "/api/2.0/mlflow/registered-models/get":
            if q["name"] != f"{PROJECT}.clf":
                return missing
            aliases = [{"alias": a, "version": str(v)} for a, v in self.aliases.items()]
            return httpx.Response(200, json={"registered_model": {"name": q["name"], "aliases": aliases}})
        version = int(q.get("version", "0") or 0)
        if path == "/api/2.0/mlflow/model-versions/get":
            if version not in self.versions:
                return missing
            mv = {"name": q["name"], "version": str(version), "status": "READY", "source": f"models:/{MODEL_ID}"}
            if version == 9:
                mv["status"] = "PENDING_REGISTRATION"
            return httpx.Response(200, json={"model_version": mv})
        if path == "/api/2.0/mlflow/model-versions/get-download-uri":
            return httpx.Response(200, json={"artifact_uri": f"mlflow-artifacts:/{ROOT}/v{version}"})
        prefix = f"/api/2.0/mlflow-artifacts/artifacts/{ROOT}/v"
        if path.startswith(prefix):
            number, _, name = path[len(prefix) :].partition("/")
            mlmodel, data = self.versions[int(number)]
            if name == "MLmodel":
                return httpx.Response(200, content=mlmodel.encode())
            if name == "model.skops":
                return httpx.Response(200, content=data)
            return missing
        return missing


def _registry(fake: FakeRegistry | None = None, down: bool = False) -> Registry:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse if down else fake.handle)  # type: ignore[union-attr]
    admin = MLflowAdmin("http://mlflow.test", "admin-password", transport=transport)
    return Registry(Settings(models={"enabled": True}), admin=admin)


def test_publish_copies_a_skops_model_and_its_signature(tmp_path: Path, skops_files: dict[str, bytes]) -> None:
    fake = FakeRegistry({1: (_mlmodel(), skops_files["good"]), 2: (_mlmodel(), skops_files["good"])}, {"champion": 2})
    objects = LocalObjectStore(tmp_path / "storage")
    registry = _registry(fake)

    published = publish_model(registry, objects, PROJECT, "clf", "champion")
    assert published.version == 2
    assert published.key == artifact_key(PROJECT, "clf", 2) == f"serving/{PROJECT}/clf/2/model.skops"
    assert published.inputs == [{"name": c, "type": "double"} for c in ("a", "b", "c", "d")]
    assert objects.get_bytes(published.key) == skops_files["good"]
    assert all(r.headers["X-MLflow-Workspace"] == PROJECT for r in fake.requests)
    assert all(r.headers["Authorization"].startswith("Basic ") for r in fake.requests)

    assert publish_model(registry, objects, PROJECT, "clf", "champion") == published  # the same object again
    assert publish_model(registry, objects, PROJECT, "clf", 1).key == f"serving/{PROJECT}/clf/1/model.skops"
    assert publish_model(registry, objects, PROJECT, "clf", "1").version == 1


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (3, "is not a scikit-learn model saved with skops"),
        (4, "holds types that are not trusted: math.sqrt"),
        (5, "has no input signature"),
        (6, "takes tensors, not named columns"),
        (7, "names a model file outside the model"),
        (8, "the model file is not a readable skops file"),
    ],
)
def test_publish_refuses_what_it_cannot_serve_safely(
    version: int, message: str, tmp_path: Path, skops_files: dict[str, bytes]
) -> None:
    good, untrusted = skops_files["good"], skops_files["untrusted"]
    fake = FakeRegistry(
        {
            3: (_mlmodel(fmt="cloudpickle", pickled="model.pkl"), b"\x80\x04 pickle"),
            4: (_mlmodel(), untrusted),
            5: (_mlmodel(signature=None), good),
            6: (_mlmodel(signature=[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]), good),
            7: (_mlmodel(pickled="../../other/model.skops"), good),
            8: (_mlmodel(), b"not a zip file"),
        },
        {},
    )
    objects = LocalObjectStore(tmp_path / "storage")
    with pytest.raises(InvalidInput, match=message):
        publish_model(_registry(fake), objects, PROJECT, "clf", version)
    assert not (tmp_path / "storage").exists() or not any((tmp_path / "storage").rglob("*.skops"))


def test_publish_names_what_is_missing_and_a_registry_that_is_down(
    tmp_path: Path, skops_files: dict[str, bytes]
) -> None:
    fake = FakeRegistry({1: (_mlmodel(), skops_files["good"]), 9: (_mlmodel(), skops_files["good"])}, {"champion": 1})
    objects = LocalObjectStore(tmp_path / "storage")
    registry = _registry(fake)
    with pytest.raises(NotFound, match="model 'nope' not found in project 'churn'"):
        publish_model(registry, objects, PROJECT, "nope", "champion")
    with pytest.raises(
        NotFound, match="model 'clf' has no alias 'staging' in project 'churn' \\(its aliases: champion\\)"
    ):
        publish_model(registry, objects, PROJECT, "clf", "staging")
    with pytest.raises(NotFound, match="model 'clf' has no version 4 in project 'churn'"):
        publish_model(registry, objects, PROJECT, "clf", 4)
    with pytest.raises(Conflict, match="version 9 of model 'clf' is pending_registration"):
        publish_model(registry, objects, PROJECT, "clf", 9)
    with pytest.raises(ServiceUnavailable, match="not reachable"):
        publish_model(_registry(down=True), objects, PROJECT, "clf", "champion")
    off = Registry(Settings(models={"enabled": False}))
    with pytest.raises(ServiceUnavailable, match="not enabled"):
        publish_model(off, objects, PROJECT, "clf", "champion")
