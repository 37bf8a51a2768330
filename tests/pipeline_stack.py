"""Fixtures (a pytest plugin loaded by tests/conftest.py): one real embedded platform for the
pipeline and model suites: Prefect server, the platform's worker, the MLflow server (basic auth), the
API and the console, started by the supervisor (``selfserve up``) on free ports in a fresh home,
once per test session (Prefect takes 12-20 s to start, MLflow 15-25 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfserve import Client
from selfserve.settings import Settings, get_settings
from tests.support import free_port


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    admin_password: str
    clients: list[Client] = field(default_factory=list)

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    @property
    def url(self) -> str:
        return self.settings.api_url

    @property
    def mlflow_url(self) -> str:
        return self.settings.mlflow_url

    def admin(self) -> Client:
        c = Client(url=self.url, token="")
        self.clients.append(c)
        c.login("admin", self.admin_password, save=False)
        return c

    def user(self, name: str, admin: Client | None = None) -> Client:
        admin = admin or self.admin()
        created = admin.users.create(name)
        c = Client(url=self.url, token="")
        self.clients.append(c)
        assert created.password
        c.login(name, created.password, save=False)
        return c

    def project(self, admin: Client | None = None, prefix: str = "p") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        (admin or self.admin()).projects.create(name)
        return name


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("pipelines-home")
    env = {
        "SELFSERVE_HOME": str(home),
        "SELFSERVE_SERVER__API_PORT": str(free_port()),
        "SELFSERVE_SERVER__CONSOLE_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__ENABLED": "true",
        "SELFSERVE_PIPELINES__PREFECT_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__WORKER_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__LOST_AFTER": "6",
        "SELFSERVE_PIPELINES__HEARTBEAT_SECONDS": "1",
        "SELFSERVE_MODELS__ENABLED": "true",
        "SELFSERVE_MODELS__MLFLOW_PORT": str(free_port()),
        "SELFSERVE_SERVING__RUNTIME_PORT": str(free_port()),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    cli_env = {**os.environ, **env, "SELFSERVE_CONFIG_DIR": str(home / "cli")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "selfserve.cli", *args], env=cli_env, capture_output=True, text=True, timeout=300
        )

    try:
        # Prefect and MLflow start side by side on two cores: under load that takes a minute or more.
        started = cli("up", "--no-demo", "--timeout", "240")
        assert started.returncode == 0, f"selfserve up failed:\n{started.stdout}\n{started.stderr}"
        password = (home / "admin-credentials.txt").read_text().split("password:")[1].split()[0]
        yield Stack(settings=settings, env=env, admin_password=password)
    finally:
        cli("down")
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@pytest.fixture
def pipeline_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Per test, after the autouse isolation: point settings at the running stack again."""
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield stack
    stack.close_clients()


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    return d


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use the real stack last, so that everything else runs without its worker
    and Prefect server busy in the background (the stack starts with the first of them)."""
    items.sort(key=lambda item: "stack" in getattr(item, "fixturenames", ()))
