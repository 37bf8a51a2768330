"""Serving: route predict through the gateway vs the same BentoML deployment called directly vs a bare
FastAPI endpoint; feature lookup by key.

A fresh embedded platform is started with the CLI (``selfserve up --no-demo`` in a temporary home, on
free ports), as a user would: API (with the gateway), console, MLflow, Prefect and its worker, and the
serving runtime. As admin, the benchmark makes a user, who makes a project; the admin sets its quotas
(2 deployments, an rpm far above what the run sends, so that the limiter counts but never refuses).

Two models are fitted once in this process on the same synthetic data (10 numeric features, a binary
label): a RandomForest of 100 trees (a realistic tabular model, where the model's own time dominates)
and a LogisticRegression (so cheap that what is left is the serving overhead itself). Each is saved
with skops to a file, and logged to MLflow with skops as the platform's training logs models,
registered as ``<project>.rf`` / ``<project>.lr`` with version 1 as champion, deployed (one BentoML
process each, ``rf@champion`` / ``lr@champion``) and given a route of its own.

Three targets per model, answering the same JSON (``{"rows": [{...}]}`` -> predictions):

- route: ``POST /api/v1/projects/<p>/routes/<r>/predict`` with the user's bearer token: authorization,
  quota, row checks, the hop to BentoML, the prediction log;
- direct: ``POST http://127.0.0.1:<port>/predict`` on the deployment's BentoML server (the port the
  runtime recorded in ``serving_deployments``), the same process the route forwards to;
- bare: a minimal FastAPI app under uvicorn in its own process (one worker, access log off) that
  loads the same skops file and answers with a pydantic-validated body and ``model.predict`` on a
  DataFrame: what one would write by hand to serve the model.

Every request carries one row (``--rows``), drawn from a pool of pre-encoded bodies, and the same
bearer header to all three targets. The client is the same for all: for concurrency 1 one sync
``httpx.Client`` with keep-alive; for concurrency 8 eight threads each with its own ``httpx.Client``.
Each client opens its connection with an untimed request, then the threads start together. Before
measuring, the three targets' answers to the same rows are checked against the local model, and one
warm-up pass is made. Then rounds interleave the targets (the order rotates each round) so that the
shared machine's noise hits all alike. p50/p99 are over all requests of all rounds; requests/s is all
requests over the time spent on that target. Alongside, the CPU time each role's processes used (the
API, the BentoML servers and workers, the bare servers, this client; read from ``/proc``) per request,
less what each uses idle (measured for 10 s first): latency on a shared machine includes waiting for a
core, CPU time does not.

Feature lookup: a 10 000-row dataset keyed by an integer ``id`` is uploaded and a feature view made on
it; ``GET /api/v1/projects/<p>/features/<view>/<key>`` for random keys, sequentially with keep-alive,
alternating in rounds with the baseline ``GET /api/v1/projects/<p>`` (the same authentication and
authorization path, no lookup).

Where the route's time goes (``--no-breakdown`` skips it): the API's app is built in this process on
the running platform's database and called straight through ASGI on the LogisticRegression route,
with timers around the gateway's ``predict`` and its hop to the deployment; the hop is also timed
alone with httpx.AsyncClient (the gateway's client), aiohttp and a sync httpx.Client. Of the route's
added time, what this does not show is the API's HTTP server, the extra socket and the wake-ups of
one more process.

    uv run python bench/bench_serving.py [--requests 1000] [--rounds 3] [--lookups 2000] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, percentile, process, python, wait_http

GATEWAY_P50_GOAL_MS = 1.0  # route p50 - direct p50
ROUTE_BARE_P50_GOAL = 1.5  # route p50 / bare p50, at most
ROUTE_BARE_RPS_GOAL = 0.7  # route req/s / bare req/s, at least
LOOKUP_P99_GOAL_MS = 5.0
FEATURES = [f"x{i}" for i in range(10)]
MODELS = ("rf", "lr")
MODEL_TITLES = {"rf": "RandomForest, 100 trees", "lr": "LogisticRegression"}
TARGETS = ("direct", "route", "bare")
CONCURRENCIES = (1, 8)
FEATURE_VIEW = "customers"
FEATURE_ROWS = 10_000
JSON = {"content-type": "application/json"}

BARE_APP = textwrap.dedent(
    """
    import json
    import sys

    import pandas as pd
    import skops.io
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = skops.io.load(sys.argv[1], trusted=json.loads(sys.argv[4]))
    columns = json.loads(sys.argv[3])
    app = FastAPI()


    class Rows(BaseModel):
        rows: list[dict[str, float]]


    @app.post("/predict")
    def predict(body: Rows) -> dict[str, list[int]]:
        return {"predictions": model.predict(pd.DataFrame(body.rows, columns=columns)).tolist()}


    if __name__ == "__main__":
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False, log_level="warning")
    """
)


# -- the stack --------------------------------------------------------------------------------------


class Stack:
    """A fresh ``selfserve up --no-demo`` in a temporary home, on free ports, with models and serving."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.env = {
            "SELFSERVE_HOME": str(self.home),
            "SELFSERVE_CONFIG_DIR": str(tmp / "cli"),
            "SELFSERVE_SERVER__API_PORT": str(free_port()),
            "SELFSERVE_SERVER__CONSOLE_PORT": str(free_port()),
            "SELFSERVE_PIPELINES__ENABLED": "true",
            "SELFSERVE_PIPELINES__PREFECT_PORT": str(free_port()),
            "SELFSERVE_PIPELINES__WORKER_PORT": str(free_port()),
            "SELFSERVE_MODELS__ENABLED": "true",
            "SELFSERVE_MODELS__MLFLOW_PORT": str(free_port()),
            "SELFSERVE_SERVING__ENABLED": "true",
            "SELFSERVE_SERVING__RUNTIME_PORT": str(free_port()),
        }
        self.url = f"http://127.0.0.1:{self.env['SELFSERVE_SERVER__API_PORT']}"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python(), "-m", "selfserve.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        t0 = time.perf_counter()
        # Prefect and MLflow start side by side on the shared cores: under load that takes a minute or more.
        started = self.cli("up", "--no-demo", "--timeout", "240")
        try:
            if started.returncode != 0:
                raise RuntimeError(f"selfserve up failed:\n{started.stdout}\n{started.stderr}")
            print(f"selfserve up --no-demo: healthy after {time.perf_counter() - t0:.1f} s", flush=True)
            yield self
        finally:
            self.cli("down", timeout=90)

    @property
    def admin_password(self) -> str:
        return (self.home / "admin-credentials.txt").read_text().split("password:")[1].split()[0]

    def deployment_port(self, name: str) -> int:
        """The port of the deployment's BentoML server, as the serving runtime recorded it."""
        with contextlib.closing(sqlite3.connect(self.home / "selfserve.db")) as db:
            row = db.execute("select port, state from serving_deployments where name = ?", (name,)).fetchone()
        if row is None or not row[0] or row[1] != "ready":
            raise RuntimeError(f"deployment {name!r} has no ready port: {row}")
        return int(row[0])


# -- models -----------------------------------------------------------------------------------------


@dataclass
class Fitted:
    kind: str
    model: Any
    path: Path  # the skops file the bare baseline loads


def training_frame(n: int, seed: int) -> tuple[Any, Any]:
    """Synthetic tabular data: 10 numeric features, a binary label from a noisy nonlinear rule."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    score = x["x0"] + 0.5 * x["x1"] * x["x2"] - 0.8 * x["x3"] + np.sin(2 * x["x4"]) + rng.normal(scale=0.5, size=n)
    return x, (score > 0).astype(int)


def fit_models(workdir: Path) -> tuple[Any, dict[str, Fitted]]:
    import skops.io
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = training_frame(5000, 0)
    models = {
        "rf": RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y),
        "lr": LogisticRegression(max_iter=1000).fit(x, y),
    }
    fitted = {}
    for kind, model in models.items():
        path = workdir / f"{kind}.skops"
        skops.io.dump(model, path)
        fitted[kind] = Fitted(kind, skops.io.load(path, trusted=trusted_types()), path)
    return x, fitted


def trusted_types() -> list[str]:
    from selfserve.ml.training import SKOPS_TRUSTED_TYPES

    return list(SKOPS_TRUSTED_TYPES)


@contextlib.contextmanager
def mlflow_as(client: Any, project: str) -> Iterator[Any]:
    """The plain ``mlflow`` client as ``client``'s own MLflow account in ``project``'s workspace."""
    import mlflow

    env = client.mlflow.env(project).environment()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        yield mlflow
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register(client: Any, project: str, x: Any, fitted: dict[str, Fitted]) -> None:
    """Each model as version 1 (champion) of ``<project>.<kind>``, logged with skops as the platform's
    training flow logs models (the serving runtime loads nothing else)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings(), mlflow_as(client, project) as ml:
        warnings.simplefilter("ignore")
        ml.set_experiment(f"{project}/bench-serving")
        for kind, f in fitted.items():
            with ml.start_run():
                mlflow.sklearn.log_model(
                    f.model,
                    name="model",
                    signature=infer_signature(x, f.model.predict(x)),
                    pip_requirements=["scikit-learn"],
                    serialization_format="skops",
                    skops_trusted_types=trusted_types(),
                    registered_model_name=f"{project}.{kind}",
                )
            ml.MlflowClient().set_registered_model_alias(f"{project}.{kind}", "champion", "1")


# -- load -------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """All requests to one target at one concurrency, over the rounds."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    round_p50_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds while these requests ran

    def add(self, latencies: list[float], seconds: float, cpu: dict[str, float]) -> None:
        self.latencies.extend(latencies)
        self.seconds += seconds
        self.round_p50_ms.append(percentile(latencies, 50) * 1000)
        for role, used in cpu.items():
            self.cpu[role] = self.cpu.get(role, 0.0) + used

    def cpu_ms(self, role: str) -> float:
        """CPU milliseconds per request spent by the processes of ``role``."""
        return self.cpu.get(role, 0.0) / len(self.latencies) * 1000

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROLES = ("client", "api", "bentoml", "bare")


class CPU:
    """CPU time of the processes that answer requests, by role, read from ``/proc``: the API, every
    BentoML process (servers and their workers, found by the platform's home in their environment),
    the bare servers, and this process (the client). CPU per request does not move with the waits a
    shared machine adds to latency, so it says what each hop costs."""

    def __init__(self, home: Path, bare_pids: Sequence[int]) -> None:
        self.pids: dict[int, str] = dict.fromkeys(bare_pids, "bare")
        self.idle: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        marker = f"SELFSERVE_HOME={home}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker not in environ:
                continue
            if b"bentoml" in cmdline:
                self.pids[int(entry.name)] = "bentoml"
            elif b"selfserve.server" in cmdline:
                self.pids[int(entry.name)] = "api"
        if "api" not in self.pids.values() or "bentoml" not in self.pids.values():
            raise RuntimeError(f"the API and BentoML processes were not found under {home}")

    def sample(self) -> dict[str, float]:
        used = dict.fromkeys(ROLES, 0.0)
        used["client"] = time.process_time()
        for pid, role in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[role] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        return used

    def measure_idle(self, seconds: float) -> dict[str, float]:
        """CPU seconds per second each role uses with no requests: the API's background work (the
        prediction log's flushes, feature sync, the pipeline reconciler) and the runtime's health checks
        of the BentoML servers. Subtracted from what ``measure`` reports."""
        before, t0 = self.sample(), time.perf_counter()
        time.sleep(seconds)
        after, elapsed = self.sample(), time.perf_counter() - t0
        self.idle = {role: max(0.0, after[role] - before[role]) / elapsed for role in ROLES}
        self.idle["client"] = 0.0
        return self.idle

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """The CPU seconds used by each role inside the block above its idle use, filled in when it ends."""
        out: dict[str, float] = {}
        before, t0 = self.sample(), time.perf_counter()
        yield out
        after, elapsed = self.sample(), time.perf_counter() - t0
        out.update({role: after[role] - before[role] - self.idle[role] * elapsed for role in ROLES})


def load(
    url: str, headers: dict[str, str], bodies: Sequence[bytes], n: int, concurrency: int
) -> tuple[list[float], float]:
    """``n`` POSTs of ``bodies`` to ``url`` from ``concurrency`` threads, each with its own keep-alive
    client; returns every request's latency and the wall time from the common start to the last answer."""
    per_thread = max(1, n // concurrency)
    start = threading.Barrier(concurrency + 1)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with httpx.Client(headers=headers, timeout=60) as c:
                c.post(url, content=bodies[i % len(bodies)], headers=JSON).raise_for_status()
                start.wait()
                own = latencies[i]
                for j in range(per_thread):
                    body = bodies[(i * per_thread + j) % len(bodies)]
                    t0 = time.perf_counter()
                    r = c.post(url, content=body, headers=JSON)
                    own.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
        except BaseException as e:
            failures.append(e)
            start.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return [x for own in latencies for x in own], elapsed


def gets(c: httpx.Client, urls: Sequence[str]) -> list[float]:
    """Sequential GETs on one keep-alive client; the latency of each."""
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = c.get(url)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return out


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    project: str
    token: str
    urls: dict[tuple[str, str], str]  # (model, target) -> predict URL


def request_bodies(n_rows: int, count: int = 256) -> list[bytes]:
    """Pre-encoded ``{"rows": [...]}`` bodies of fresh rows (not the training rows)."""
    x, _ = training_frame(count * n_rows, 1)
    records = x.to_dict(orient="records")
    return [json.dumps({"rows": records[i * n_rows : (i + 1) * n_rows]}).encode() for i in range(count)]


def check_answers(setup: Setup, fitted: dict[str, Fitted]) -> None:
    """The three targets answer the same rows as the local model does, before anything is timed."""
    import pandas as pd

    x, _ = training_frame(20, 2)
    body = {"rows": x.to_dict(orient="records")}
    headers = {"Authorization": f"Bearer {setup.token}"}
    for kind, f in fitted.items():
        expected = f.model.predict(pd.DataFrame(body["rows"], columns=FEATURES)).tolist()
        for target in TARGETS:
            r = httpx.post(setup.urls[(kind, target)], json=body, headers=headers, timeout=60)
            r.raise_for_status()
            got = r.json()["predictions"]
            if got != expected:
                raise RuntimeError(f"{kind} {target}: predictions differ from the local model's")


def measure_predict(
    setup: Setup, cpu: CPU, bodies: list[bytes], requests: int, rounds: int
) -> dict[tuple[str, int, str], Samples]:
    headers = {"Authorization": f"Bearer {setup.token}"}
    results: dict[tuple[str, int, str], Samples] = {}
    for kind in MODELS:
        for conc in CONCURRENCIES:
            for target in TARGETS:  # warm-up
                load(setup.urls[(kind, target)], headers, bodies, min(requests, 200), conc)
            for rnd in range(rounds):
                order = TARGETS[rnd % len(TARGETS) :] + TARGETS[: rnd % len(TARGETS)]
                for target in order:
                    with cpu.measure() as used:
                        lat, secs = load(setup.urls[(kind, target)], headers, bodies, requests, conc)
                    results.setdefault((kind, conc, target), Samples()).add(lat, secs, used)
                line = ", ".join(f"{t} {results[(kind, conc, t)].round_p50_ms[-1]:.2f} ms" for t in TARGETS)
                print(f"  {kind} c={conc} round {rnd + 1}: p50 {line}", flush=True)
    return results


def measure_lookups(stack: Stack, setup: Setup, cpu: CPU, lookups: int, rounds: int) -> dict[str, Samples]:
    rng = random.Random(0)
    api = f"{stack.url}/api/v1/projects/{setup.project}"
    out = {"lookup": Samples(), "project": Samples()}
    with httpx.Client(headers={"Authorization": f"Bearer {setup.token}"}, timeout=60) as c:
        gets(c, [f"{api}/features/{FEATURE_VIEW}/{rng.randrange(FEATURE_ROWS)}" for _ in range(200)] + [api] * 200)
        for rnd in range(rounds):
            count = lookups // rounds + (1 if rnd < lookups % rounds else 0)
            urls = {
                "lookup": [f"{api}/features/{FEATURE_VIEW}/{rng.randrange(FEATURE_ROWS)}" for _ in range(count)],
                "project": [api] * count,
            }
            for kind, batch in urls.items():
                with cpu.measure() as used:
                    t0 = time.perf_counter()
                    latencies = gets(c, batch)
                    elapsed = time.perf_counter() - t0
                out[kind].add(latencies, elapsed, used)
    return out


class Timings:
    """Per-call durations of methods wrapped on live objects, in call order (one list per piece)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def wrap(self, obj: Any, attr: str, key: str) -> None:
        original = getattr(obj, attr)
        samples = self.samples.setdefault(key, [])
        if inspect.iscoroutinefunction(original):

            async def timed_async(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await original(*a, **k)
                finally:
                    samples.append(time.perf_counter() - t0)

            setattr(obj, attr, timed_async)
        else:

            def timed(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    samples.append(time.perf_counter() - t0)

            setattr(obj, attr, timed)

    def clear(self) -> None:
        for v in self.samples.values():
            v.clear()


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


async def asgi_post(app: Any, path: str, body: bytes, token: str) -> float:
    """One POST straight into the ASGI app (no server, no socket): its duration."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    t0 = time.perf_counter()
    await app(scope, receive, send)
    elapsed = time.perf_counter() - t0
    if status != [200]:
        raise RuntimeError(f"{path}: status {status}")
    return elapsed


def breakdown(stack: Stack, setup: Setup, bodies: list[bytes], n: int, rounds: int) -> list[tuple[str, float]]:
    """Where the route's time goes, timed in this process on the LogisticRegression route.

    The API's app is built here on the running platform's home and database (no lifespan: no
    background work) and driven with ASGI calls, so the HTTP server and the socket in front of it are
    left out; ``Gateway.predict`` and its hop to the deployment, ``Gateway._call``, are wrapped with
    timers. The hop to BentoML is also timed alone from one event loop with httpx.AsyncClient and with
    aiohttp, and with the benchmark's sync client. All sequential, the variants alternating in rounds;
    the first round warms up.
    """
    os.environ.update(stack.env)
    from selfserve.server import create_app
    from selfserve.settings import get_settings

    get_settings.cache_clear()
    app = create_app(get_settings())
    gw = app.state.gateway
    timings = Timings()
    timings.wrap(gw, "predict", "predict")
    timings.wrap(gw, "_call", "call")
    path = f"/api/v1/projects/{setup.project}/routes/lr/predict"
    direct = setup.urls[("lr", "direct")]
    per_round = max(1, n // rounds)

    async def measure() -> dict[str, list[float]]:
        import aiohttp

        out: dict[str, list[float]] = {}
        async with httpx.AsyncClient(timeout=60) as hx, aiohttp.ClientSession() as aio:

            async def hx_post(body: bytes) -> float:
                t0 = time.perf_counter()
                r = await hx.post(direct, content=body, headers=JSON)
                r.raise_for_status()
                return time.perf_counter() - t0

            async def aio_post(body: bytes) -> float:
                t0 = time.perf_counter()
                async with aio.post(direct, data=body, headers=JSON) as r:
                    r.raise_for_status()
                    await r.read()
                return time.perf_counter() - t0

            with httpx.Client(timeout=60) as sync:

                def sync_post(body: bytes) -> float:
                    t0 = time.perf_counter()
                    sync.post(direct, content=body, headers=JSON).raise_for_status()
                    return time.perf_counter() - t0

                for rnd in range(rounds + 1):
                    timings.clear()
                    totals = [
                        await asgi_post(app, path, bodies[i % len(bodies)], setup.token) for i in range(per_round)
                    ]
                    predict, call = timings.samples["predict"], timings.samples["call"]
                    found = {
                        "app": totals,
                        "app - predict": [t - p for t, p in zip(totals, predict, strict=True)],
                        "predict - hop": [p - c for p, c in zip(predict, call, strict=True)],
                        "hop": list(call),
                        "app - hop": [t - c for t, c in zip(totals, call, strict=True)],
                        "httpx.AsyncClient": [await hx_post(bodies[i % len(bodies)]) for i in range(per_round)],
                        "aiohttp": [await aio_post(bodies[i % len(bodies)]) for i in range(per_round)],
                        "httpx.Client": [sync_post(bodies[i % len(bodies)]) for i in range(per_round)],
                    }
                    if rnd:
                        for key, values in found.items():
                            out.setdefault(key, []).extend(values)
        return out

    measured = asyncio.run(measure())
    rows = [
        ("in-process app, whole request", "app"),
        (
            "- FastAPI: middleware, routing, dependencies (session, bearer auth), body validation, response",
            "app - predict",
        ),
        ("- gateway: cached authorization and route, quota, row checks, stats, log", "predict - hop"),
        ("- the hop to BentoML (`Gateway._call`, httpx.AsyncClient)", "hop"),
        ("app without the hop", "app - hop"),
        ("hop alone: httpx.AsyncClient (the gateway's client)", "httpx.AsyncClient"),
        ("hop alone: aiohttp", "aiohttp"),
        ("hop alone: httpx.Client (sync, the benchmark's client)", "httpx.Client"),
    ]
    return [(label, median_ms(measured[key])) for label, key in rows]


def prepare(stack: Stack, tmp: Path, fitted: dict[str, Fitted], x: Any, bare: dict[str, tuple[int, int]]) -> Setup:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selfserve import Client

    admin = Client(url=stack.url, token="")
    admin.login("admin", stack.admin_password, save=False)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    created = admin.users.create(name)
    assert created.password
    user = Client(url=stack.url, token="")
    user.login(name, created.password, save=False)
    project = f"serve-{uuid.uuid4().hex[:6]}"
    user.projects.create(project)
    admin.quotas.set(project, {"deployments": 2, "rpm": 1_000_000_000})
    admin.close()

    t0 = time.perf_counter()
    register(user, project, x, fitted)
    print(f"models logged and registered in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    for kind in MODELS:
        user.deployments.create(project, kind, f"{kind}@champion")
    for kind in MODELS:
        user.deployments.wait_ready(project, kind, timeout=300)
        user.routes.create(project, kind, kind)
    print(f"deployments ready in {time.perf_counter() - t0:.1f} s", flush=True)

    import numpy as np

    rng = np.random.default_rng(3)
    table = pa.table(
        {"id": pa.array(np.arange(FEATURE_ROWS, dtype="int64"))}
        | {f: pa.array(rng.normal(size=FEATURE_ROWS)) for f in FEATURES}
    )
    path = tmp / f"{FEATURE_VIEW}.parquet"
    pq.write_table(table, path)
    user.datasets.upload(project, FEATURE_VIEW, path)
    view = user.features.create(project, FEATURE_VIEW, dataset=FEATURE_VIEW, key="id")
    deadline = time.monotonic() + 120
    while view.state != "ready":
        if view.state == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"feature view {FEATURE_VIEW}: {view.state} {view.last_error}")
        time.sleep(0.5)
        view = user.features.get(project, FEATURE_VIEW)
    print(f"feature view {FEATURE_VIEW}: {view.rows} rows, version {view.materialized_version}", flush=True)

    urls: dict[tuple[str, str], str] = {}
    for kind in MODELS:
        urls[(kind, "route")] = f"{stack.url}/api/v1/projects/{project}/routes/{kind}/predict"
        urls[(kind, "direct")] = f"http://127.0.0.1:{stack.deployment_port(kind)}/predict"
        urls[(kind, "bare")] = f"http://127.0.0.1:{bare[kind][0]}/predict"
    token = user.token
    user.close()
    assert token
    return Setup(project=project, token=token, urls=urls)


@contextlib.contextmanager
def bare_servers(tmp: Path, fitted: dict[str, Fitted]) -> Iterator[dict[str, tuple[int, int]]]:
    """One bare FastAPI process per model, as there is one BentoML process per deployment: model ->
    (port, pid)."""
    app = tmp / "bare_app.py"
    app.write_text(BARE_APP)
    ports = {kind: free_port() for kind in fitted}
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for kind, f in fitted.items():
            argv = [
                python(),
                str(app),
                str(f.path),
                str(ports[kind]),
                json.dumps(FEATURES),
                json.dumps(trusted_types()),
            ]
            pids[kind] = stack.enter_context(process(argv, None, tmp / f"bare-{kind}.log"))
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/docs", timeout=120)
        yield {kind: (ports[kind], pids[kind]) for kind in fitted}


# -- the report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    results: dict[tuple[str, int, str], Samples],
    lookups: dict[str, Samples],
    pieces: list[tuple[str, float]],
    idle: dict[str, float],
    args: argparse.Namespace,
    load_avg: tuple[float, float],
) -> str:
    lines = [
        "### Serving: route predict vs direct BentoML vs bare FastAPI; feature lookup",
        "",
        f"`uv run python bench/bench_serving.py --requests {args.requests} --rounds {args.rounds}"
        f" --lookups {args.lookups}{'' if args.breakdown else ' --no-breakdown'}`",
        "",
        f"{args.rows} row(s) per request; {args.requests} requests per target, concurrency and round; "
        f"{args.rounds} rounds; p50/p99 over all rounds. Load average (1 min) {load_avg[0]:.1f} at the start, "
        f"{load_avg[1]:.1f} at the end.",
        "",
        "CPU ms per request: CPU time of the role's processes (from `/proc`) over the requests sent, less "
        f"their idle use measured for 10 s before (API {idle['api'] * 1000:.0f} ms/s, "
        f"BentoML {idle['bentoml'] * 1000:.0f} ms/s, bare {idle['bare'] * 1000:.0f} ms/s).",
        "",
        "| model | concurrency | target | p50 ms | p99 ms | req/s | CPU ms/req: API | BentoML | bare | client |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in MODELS:
        for conc in CONCURRENCIES:
            for target in TARGETS:
                s = results[(kind, conc, target)]
                cpu = " | ".join(f"{s.cpu_ms(role):.2f}" for role in ("api", "bentoml", "bare", "client"))
                lines.append(
                    f"| {MODEL_TITLES[kind]} | {conc} | {target} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.rps:.0f} "
                    f"| {cpu} |"
                )
    lines += [
        "",
        f"| model | concurrency | gateway added p50 ms (route - direct; goal <= {GATEWAY_P50_GOAL_MS:g}) "
        f"| route / bare p50 (goal <= {ROUTE_BARE_P50_GOAL:g}x) "
        f"| route / bare req/s (goal >= {ROUTE_BARE_RPS_GOAL:g}x) | direct / bare p50 |",
        "|---|---:|---|---|---|---:|",
    ]
    for kind in MODELS:
        for conc in CONCURRENCIES:
            direct, route, bare = (results[(kind, conc, t)] for t in TARGETS)
            added = route.p50_ms - direct.p50_ms
            p50_ratio = route.p50_ms / bare.p50_ms
            rps_ratio = route.rps / bare.rps
            per_round = "/".join(f"{r - d:.2f}" for r, d in zip(route.round_p50_ms, direct.round_p50_ms, strict=True))
            lines.append(
                f"| {MODEL_TITLES[kind]} | {conc} | {added:.2f} (rounds {per_round}) "
                f"{verdict(added <= GATEWAY_P50_GOAL_MS)} "
                f"| {p50_ratio:.2f}x {verdict(p50_ratio <= ROUTE_BARE_P50_GOAL)} "
                f"| {rps_ratio:.2f}x {verdict(rps_ratio >= ROUTE_BARE_RPS_GOAL)} "
                f"| {direct.p50_ms / bare.p50_ms:.2f}x |"
            )
    lookup, project = lookups["lookup"], lookups["project"]
    p99 = lookup.p99_ms
    lines += [
        "",
        f"Feature lookup: {len(lookup.latencies)} GETs of random keys of a {FEATURE_ROWS:,}-row view, sequential, "
        f"keep-alive; baseline `GET /api/v1/projects/<p>` ({len(project.latencies)} GETs) alternating in rounds.",
        "",
        "| request | p50 ms | p99 ms | API CPU ms/req |",
        "|---|---:|---:|---:|",
        f"| `GET .../features/{FEATURE_VIEW}/<key>` | {lookup.p50_ms:.2f} | {p99:.2f} | {lookup.cpu_ms('api'):.2f} |",
        f"| `GET /api/v1/projects/<p>` | {project.p50_ms:.2f} | {project.p99_ms:.2f} | {project.cpu_ms('api'):.2f} |",
        "",
        f"- feature lookup p99 {p99:.2f} ms (goal <= {LOOKUP_P99_GOAL_MS:g} ms): {verdict(p99 <= LOOKUP_P99_GOAL_MS)}",
    ]
    if pieces:
        lines += [
            "",
            "Where the route's time goes (LogisticRegression, in-process ASGI calls, sequential; medians):",
            "",
            "| piece | median ms |",
            "|---|---:|",
            *(f"| {label} | {ms:.3f} |" for label, ms in pieces),
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=1000, help="requests per target, concurrency and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1, help="rows per predict request")
    ap.add_argument("--lookups", type=int, default=2000, help="feature lookups (and as many baseline GETs)")
    ap.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the route's pieces in-process",
    )
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="selfserve-bench-serving-"))
    keep = False
    try:
        t0 = time.perf_counter()
        x, fitted = fit_models(tmp)
        print(f"models fitted in {time.perf_counter() - t0:.1f} s", flush=True)
        stack = Stack(tmp)
        with stack.running(), bare_servers(tmp, fitted) as bare:
            setup = prepare(stack, tmp, fitted, x, bare)
            check_answers(setup, fitted)
            cpu = CPU(stack.home, [pid for _, pid in bare.values()])
            idle = cpu.measure_idle(10.0)
            bodies = request_bodies(args.rows)
            results = measure_predict(setup, cpu, bodies, args.requests, args.rounds)
            lookups = measure_lookups(stack, setup, cpu, args.lookups, args.rounds)
            pieces = breakdown(stack, setup, bodies, args.requests, args.rounds) if args.breakdown else []
        print()
        print(report(results, lookups, pieces, idle, args, (load_start, os.getloadavg()[0])))
    except BaseException:
        keep = True
        print(f"\nthe run stopped; logs are kept in {tmp}", flush=True)
        raise
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
