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
        self.app.state.jobs.shutdown()
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


class MotoS3:
    """An S3 endpoint over real HTTP (moto, objects in memory) for the object-store suites."""

    ACCESS_KEY = "testing-key"
    SECRET_KEY = "testing-secret"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def __enter__(self) -> MotoS3:
        self._server.start()
        wait_http(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests apart on the one server)."""
        name = f"selfserve-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "root") -> dict[str, str]:
        """The settings that point the platform's storage at ``bucket``."""
        return {
            "SELFSERVE_STORAGE__URL": f"s3://{bucket}/{prefix}",
            "SELFSERVE_STORAGE__S3_ENDPOINT_URL": self.url,
            "SELFSERVE_STORAGE__S3_ACCESS_KEY_ID": self.ACCESS_KEY,
            "SELFSERVE_STORAGE__S3_SECRET_ACCESS_KEY": self.SECRET_KEY,
        }


# -- data ------------------------------------------------------------------------------------


def upload_table(
    client: Client,
    project: str,
    name: str,
    table: Any,
    workdir: Path,
    *,
    mode: str = "append",
    evolve: bool = False,
) -> Any:
    """Upload a pyarrow table as a Parquet file through the SDK; returns the new version."""
    import pyarrow.parquet as pq

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}-{uuid.uuid4().hex[:8]}.parquet"
    pq.write_table(table, path)
    try:
        return client.datasets.upload(project, name, path, mode=mode, evolve=evolve)
    finally:
        path.unlink(missing_ok=True)


def wait_job(client: Client, project: str, job_id: int, timeout: float = 120.0) -> Any:
    """The job once it has ended, succeeded or failed (without raising its error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.jobs.get(project, job_id)
        if job.status in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not end in {timeout} s")


# -- serving -----------------------------------------------------------------------------------------

SERVING_INPUTS = [{"name": "age", "type": "long"}, {"name": "income", "type": "double"}]


def add_deployment(
    platform: Platform, project: str, name: str, *, version: int = 1, state: str = "starting", **fields: Any
) -> None:
    """A deployment row as the API writes it once the model file is published and the quota taken, in the
    state the serving runtime leaves it in (for suites that run no runtime and no BentoML)."""
    from sqlalchemy import select

    from selfserve.policy import quotas
    from selfserve.store.tables import Project, ServingDeployment

    with platform.store.begin() as s:
        proj = s.scalar(select(Project).where(Project.name == project))
        assert proj is not None
        quotas.reserve(s, proj, "deployments", 1)
        s.add(
            ServingDeployment(
                project_id=proj.id,
                name=name,
                model="clf",
                version=version,
                model_ref=f"clf@{version}",
                artifact=f"serving/{project}/clf/{version}/model.skops",
                signature=SERVING_INPUTS,
                state=state,
                created_by="alice",
                **fields,
            )
        )


@contextlib.contextmanager
def mlflow_env(client: Client, project: str) -> Iterator[dict[str, str]]:
    """The process environment of ``client``'s own MLflow account in ``project``'s workspace (tracking
    URI, user, password, workspace), as users get it; the previous values come back afterwards."""
    import warnings

    env = client.mlflow.env(project).environment()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's notices (type hints, pickle formats) are not under test
            yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_skops_model(client: Client, project: str, model: Any, x: Any, *, name: str = "clf") -> int:
    """Log a fitted scikit-learn ``model`` as the platform's train flow does (skops, signature from ``x``)
    with ``client``'s own MLflow account, registered as a new version of ``<project>.<name>``; its number."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from selfserve.ml.training import SKOPS_TRUSTED_TYPES

    with mlflow_env(client, project) as env:
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment(f"{project}/serving")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(x, model.predict(x)),
                pip_requirements=["scikit-learn"],
                serialization_format="skops",
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                registered_model_name=f"{project}.{name}",
            )
    return int(info.registered_model_version)


# -- monitoring --------------------------------------------------------------------------------------


def add_monitor(platform: Platform, project: str, route: str, **fields: Any) -> None:
    """A monitor as ``monitor create`` leaves it, without its flow deployment (Prefect's, which the unit
    suites lack; see :func:`add_monitor_flow`)."""
    from sqlalchemy import select

    from selfserve.store.tables import Monitor, Project

    values: dict[str, Any] = {
        "reference_dataset": "customers",
        "reference_version": 0,
        "label": "churned",
        "task": "classification",
        "window_seconds": 3600,
        "drift_share": 0.3,
        "created_by": "alice",
    }
    with platform.store.begin() as s:
        proj = s.scalar(select(Project).where(Project.name == project))
        assert proj is not None
        s.add(Monitor(project_id=proj.id, route=route, **{**values, **fields}))


def add_monitor_flow(platform: Platform, project: str, name: str) -> None:
    """A monitor's flow deployment as deployed to Prefect (which the unit suites do not run)."""
    from sqlalchemy import select

    from selfserve.store.tables import FlowDeployment, Project

    with platform.store.begin() as s:
        proj = s.scalar(select(Project).where(Project.name == project))
        assert proj is not None
        s.add(
            FlowDeployment(
                project_id=proj.id,
                name=name,
                kind="builtin",
                flow_name="selfserve-monitor",
                entrypoint="monitor.py:monitor",
                code_sha="0" * 64,
                prefect_id=str(uuid.uuid4()),
                parameters={"route": "score"},
                created_by="alice",
            )
        )


def drift_run(share: float, drifted: list[str], **extra: Any) -> dict[str, Any]:
    """What a monitor run over columns age, income and plan sends, ``drifted`` of them drifted."""
    columns = {c: {"score": 0.01 if c in drifted else 0.6, "stattest": "K-S p_value", "drifted": c in drifted}
               for c in ("age", "income", "plan")}  # fmt: skip
    return {
        "status": "drift" if share >= 0.3 else "ok",
        "drift_share": share,
        "columns": columns,
        "quality": {"accuracy": 0.81},
        "rows_reference": 2000,
        "rows_current": 500,
        **extra,
    }
