"""CLI tests: the real ``selfserve`` Typer app through CliRunner, against the API served by uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from selfserve.cli import app
from tests.support import LiveServer, Platform

PASSWORD = "correct-horse-battery"


@dataclass
class Cli:
    """Runs ``selfserve`` commands and checks how they end."""

    platform: Platform
    url: str
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, list(args), input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        r = self(*args, input=input)
        assert r.exit_code == 0, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, *args: str, code: int = 1, input: str | None = None) -> Result:
        """Run a command that must fail with ``code``, a message on stderr and no traceback."""
        r = self(*args, input=input)
        assert r.exit_code == code, f"exit {r.exit_code}: {r.output}"
        # CliRunner records an escaped exception as r.exception with exit code 1: that is a crash.
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert "Traceback" not in r.output
        if code == 1:
            assert r.stderr.startswith("error: "), r.output
        return r

    def login(self, user: str, password: str) -> Result:
        return self.ok("login", "--username", user, "--password-stdin", input=password + "\n")

    def login_admin(self) -> Result:
        return self.login("admin", self.platform.admin_password)

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        """Create a user through the SDK, so that tests of other commands do not lean on ``user create``."""
        self.platform.admin().users.create(name, password=password)


@pytest.fixture
def server(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    with LiveServer(sqlite_platform.app) as s:
        monkeypatch.setenv("SELFSERVE_URL", s.url)
        yield s


@pytest.fixture
def cli(sqlite_platform: Platform, server: LiveServer) -> Cli:
    return Cli(sqlite_platform, server.url, CliRunner())
