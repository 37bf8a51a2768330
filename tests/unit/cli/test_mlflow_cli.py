"""``selfserve mlflow env``: export lines (or JSON) for the mlflow client, as the logged-in user."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fake_mlflow import FakeMLflow, models_platform
from tests.support import LiveServer
from tests.unit.cli.conftest import PASSWORD, Cli


@pytest.fixture
def on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cli, FakeMLflow]]:
    with models_platform(tmp_path, monkeypatch) as (platform, fake), LiveServer(platform.app) as server:
        monkeypatch.setenv("SELFSERVE_URL", server.url)
        yield Cli(platform, server.url, CliRunner()), fake


def test_env_prints_exports_for_the_caller(on: tuple[Cli, FakeMLflow]) -> None:
    cli, fake = on
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    lines = cli.ok("mlflow", "env", "churn").stdout.splitlines()
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)
    assert all(line.startswith("export MLFLOW_") for line in lines)
    assert exported == {
        "MLFLOW_TRACKING_URI": "http://mlflow.test",
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": fake.users["alice"]["password"],
        "MLFLOW_WORKSPACE": "churn",
    }
    assert cli.json("mlflow", "env", "churn") == {
        "tracking_uri": "http://mlflow.test",
        "workspace": "churn",
        "username": "alice",
        "password": fake.users["alice"]["password"],
    }
    cli.login("bob", PASSWORD)
    assert "project 'churn' not found" in cli.fails("mlflow", "env", "churn").stderr


def test_env_says_when_models_are_off(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    r = cli.fails("mlflow", "env", "churn", code=3)
    assert "models are not enabled" in r.stderr
