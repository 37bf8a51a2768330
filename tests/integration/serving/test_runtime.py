"""The serving runtime with real BentoML servers: ``python -m selfserve.serving.runtime`` on a SQLite metadata
DB and a local object store in a fresh home, serving a small scikit-learn model saved with skops.

One deployment is made ready once and shared by the tests (a BentoML server takes 7-10 s to start); a test
that stops it leaves the next one to start it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from selfserve.data.objectstore import LocalObjectStore
from selfserve.serving import runtime as rt
from selfserve.settings import Settings
from selfserve.store import Store
from selfserve.store.tables import Project, ServingDeployment
from tests.support import free_port

pytestmark = pytest.mark.integration

COLUMNS = ["sepal", "petal", "width", "depth"]
ARTIFACT = "serving/iris/clf/1/model.skops"
READY_TIMEOUT = 120.0


@dataclass
class Served:
    home: Path
    env: dict[str, str]
    store: Store
    project_id: int
    model: Any
    rows: list[dict[str, float]]
    runner_key: str
    runtime_port: int
    runtime: subprocess.Popen[bytes] | None = None
    deployment: int | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def models_root(self) -> Path:
        return self.home / "serving" / "models"

    def start_runtime(self) -> None:
        log = self.home / "logs" / f"runtime-{len(self.logs)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs.append(log)
        with open(log, "wb") as out:
            self.runtime = subprocess.Popen(
                [sys.executable, "-m", "selfserve.serving.runtime"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        until(lambda: self._healthy(), 60, "the runtime did not answer /health")

    def _healthy(self) -> bool:
        assert self.runtime is not None
        assert self.runtime.poll() is None, f"the runtime exited:\n{self.logs[-1].read_text()[-3000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{self.runtime_port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_runtime(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.runtime is not None
        self.runtime.send_signal(sig)
        code = self.runtime.wait(30)
        self.runtime = None
        return code

    def nudge(self) -> None:
        r = httpx.post(
            f"http://127.0.0.1:{self.runtime_port}/nudge", headers={"Authorization": f"Bearer {self.runner_key}"}
        )
        assert r.status_code == 202

    def row(self, deployment: int | None = None) -> ServingDeployment | None:
        with self.store.session() as s:
            return s.get(ServingDeployment, deployment or self.deployment)

    def insert(self, artifact: str = ARTIFACT) -> int:
        with self.store.begin() as s:
            row = ServingDeployment(
                project_id=self.project_id,
                name=f"clf-{time.monotonic_ns()}",
                model="clf",
                version=1,
                model_ref="clf@champion",
                artifact=artifact,
                signature=[{"name": c, "type": "double"} for c in COLUMNS],
                state="pending",
                created_by="admin",
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def ready(self) -> ServingDeployment:
        """The shared deployment, ready (the runtime and the row are made again when a test ended them)."""
        if self.runtime is None:
            self.start_runtime()
        if self.deployment is None or self.row() is None:
            self.deployment = self.insert()
            self.nudge()
        return self.wait(lambda r: r.state == "ready", "ready")

    def wait(self, check: Callable[[ServingDeployment], bool], what: str, seen: set[str] | None = None) -> Any:
        def matches() -> ServingDeployment | None:
            row = self.row()
            assert row is not None
            if seen is not None:
                seen.add(row.state)
            return row if check(row) else None

        return until(matches, READY_TIMEOUT, lambda: f"deployment never {what}: {self.describe()}")

    def describe(self) -> str:
        row = self.row()
        state = f"state {row.state}, last error {row.last_error}" if row else "no row"
        log = self.home / "logs" / "serving" / f"{self.deployment}.log"
        tail = log.read_text()[-2000:] if log.exists() else "(no log)"
        return f"{state}\n--- deployment log:\n{tail}\n--- runtime log:\n{self.logs[-1].read_text()[-3000:]}"

    def predict(self, port: int, rows: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows}, timeout=30)


def until(check: Callable[[], Any], timeout: float, what: str | Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(what() if callable(what) else what)


def processes_of(pid: int) -> list[int]:
    """The server and its workers (which leave its process group)."""
    try:
        parent = psutil.Process(pid)
        return [pid, *(c.pid for c in parent.children(recursive=True))]
    except psutil.Error:
        return []


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    home = tmp_path_factory.mktemp("serving-home")
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=COLUMNS)
    y = np.where(X["sepal"] + 0.5 * X["petal"] - X["depth"] > 0, "yes", "no")
    model = LogisticRegression().fit(X, y)
    LocalObjectStore(home / "storage").put_bytes(ARTIFACT, skops.io.dumps(model))

    store = Store(f"sqlite:///{home / 'selfserve.db'}")
    store.migrate()
    with store.begin() as s:
        project = Project(name="iris", created_by="admin", status="ready")
        s.add(project)
        s.flush()
        project_id = project.id

    runtime_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFSERVE_") or k == "SELFSERVE_CONFIG_FILE"}
    env.update(
        {
            "SELFSERVE_HOME": str(home),
            "SELFSERVE_SERVING__RUNTIME_PORT": str(runtime_port),
            "SELFSERVE_SERVING__POLL_SECONDS": "0.2",
            "SELFSERVE_SERVING__HEALTH_SECONDS": "0.5",
            "SELFSERVE_SERVING__RESTART_BACKOFF_MAX": "2",
            "SELFSERVE_PIPELINES__ENABLED": "false",
            "SELFSERVE_MODELS__ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The key is derived from the secret generated under home: made here, before the runtime reads it.
    key = Settings(home=home).runner_key()
    rows = X.head(25).to_dict(orient="records")
    world = Served(home, env, store, project_id, model, rows, key, runtime_port)
    try:
        yield world
    finally:
        if world.runtime is not None:
            world.stop_runtime()
        left = rt.leftovers(world.models_root)
        rt.end_processes(left, grace=2.0)
        store.dispose()
        assert not left, f"the runtime left BentoML processes behind: {left}"


def test_a_ready_deployment_predicts_what_the_model_predicts(served: Served) -> None:
    row = served.ready()
    assert row.pid and row.port and row.ready_at is not None
    r = served.predict(row.port, served.rows)
    assert r.status_code == 200, r.text
    import pandas as pd

    expected = served.model.predict(pd.DataFrame(served.rows, columns=COLUMNS)).tolist()
    assert r.json() == {"predictions": expected}
    # Keys that are not inputs are ignored; the order of the keys does not matter.
    shuffled = [{"extra": "x", **dict(reversed(list(row.items())))} for row in served.rows[:3]]
    assert served.predict(row.port, shuffled).json() == {"predictions": expected[:3]}
    assert served.predict(row.port, []).json() == {"predictions": []}


def test_rows_that_do_not_fit_are_refused_with_the_reason(served: Served) -> None:
    row = served.ready()
    r = served.predict(row.port, [{"sepal": 1.0, "petal": 2.0, "width": 3.0}])
    assert r.status_code == 422 and "lacks the column(s) depth" in r.json()["error"]
    r = served.predict(row.port, [{"sepal": "a lot", "petal": 2.0, "width": 3.0, "depth": 1.0}])
    assert r.status_code == 422 and "column 'sepal' takes double values" in r.json()["error"]
    assert httpx.post(f"http://127.0.0.1:{row.port}/predict", content=b"{", timeout=10).status_code == 400


def test_the_log_is_read_through_the_runtime_with_its_key(served: Served) -> None:
    served.ready()
    url = f"http://127.0.0.1:{served.runtime_port}/deployments/{served.deployment}/logs"
    assert httpx.get(url, params={"tail": 5}).status_code == 401
    r = httpx.get(url, params={"tail": 200}, headers={"Authorization": f"Bearer {served.runner_key}"})
    assert r.status_code == 200
    lines = r.json()["lines"]
    assert any("selfserve: starting version 1" in line for line in lines)
    assert any("BentoServer" in line for line in lines), lines


def test_a_killed_server_is_restarted_and_answers_the_same(served: Served) -> None:
    before = served.ready()
    old = processes_of(before.pid)
    assert len(old) >= 2, "a BentoML server runs at least one worker"
    expected = served.predict(before.port, served.rows).json()

    os.kill(before.pid, signal.SIGKILL)
    seen: set[str] = set()
    after = served.wait(lambda r: r.state == "ready" and r.pid != before.pid, "ready again", seen)
    assert "restarting" in seen
    assert after.restarts >= before.restarts + 1
    assert "exited with code -9" in (after.last_error or "")
    assert not any(rt._alive(p) for p in old), (
        "the killed server's workers must be gone (they would keep serving the old port)"
    )
    assert served.predict(after.port, served.rows).json() == expected


def test_a_new_runtime_replaces_the_servers_left_behind_and_sigterm_stops_them(served: Served) -> None:
    before = served.ready()
    old = processes_of(before.pid)
    assert served.stop_runtime(signal.SIGKILL) == -signal.SIGKILL
    assert all(rt._alive(p) for p in old), "a runtime killed outright leaves its servers running"

    served.start_runtime()
    after = served.wait(lambda r: r.state == "ready" and r.pid != before.pid, "served by the new runtime")
    assert not any(rt._alive(p) for p in old), "the new runtime must stop what the old one left"
    assert served.predict(after.port, served.rows[:5]).status_code == 200

    now = processes_of(after.pid)
    assert served.stop_runtime(signal.SIGTERM) == 0
    assert not any(rt._alive(p) for p in now), "SIGTERM must stop every server"
    assert port_closed(after.port)
    row = served.row()
    assert row is not None and row.state == "pending" and row.pid is None


def test_a_model_the_service_cannot_load_is_reported_without_waiting_for_the_timeout(served: Served) -> None:
    if served.runtime is None:
        served.start_runtime()
    LocalObjectStore(served.home / "storage").put_bytes("serving/iris/broken/1/model.skops", b"not a skops file")
    broken = served.insert(artifact="serving/iris/broken/1/model.skops")
    served.nudge()
    try:
        row = until(
            lambda: (r := served.row(broken)) and r.restarts >= 1 and r,
            60,
            lambda: f"the broken deployment was not restarted: {served.describe()}",
        )
        assert "its model could not be loaded" in (row.last_error or "")
        assert "BadZipFile" in (row.last_error or ""), row.last_error
    finally:
        with served.store.begin() as s:
            s.delete(s.get(ServingDeployment, broken))
        served.nudge()


def test_deleting_the_row_stops_the_server(served: Served) -> None:
    row = served.ready()
    pids = processes_of(row.pid)
    with served.store.begin() as s:
        s.delete(s.get(ServingDeployment, served.deployment))
    served.nudge()
    until(lambda: not any(rt._alive(p) for p in pids), 30, "the server of a deleted deployment still runs")
    assert port_closed(row.port)
    until(lambda: not (served.models_root / f"{row.id}-1").exists(), 10, "the model copy is left behind")
    r = httpx.get(
        f"http://127.0.0.1:{served.runtime_port}/deployments/{row.id}/logs",
        headers={"Authorization": f"Bearer {served.runner_key}"},
    )
    assert r.status_code == 404
    with contextlib.suppress(httpx.HTTPError):
        assert httpx.get(f"http://127.0.0.1:{row.port}/readyz", timeout=2).status_code != 200
