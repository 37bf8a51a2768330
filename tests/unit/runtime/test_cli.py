"""The ``up``/``status``/``down``/``demo`` commands through CliRunner (no services are started here;
``tests/e2e/test_up_down.py`` drives a real ``selfserve up``)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable

from typer.testing import CliRunner

from selfserve.cli import app
from selfserve.runtime import _state
from selfserve.runtime._state import ServiceRecord, State
from selfserve.settings import get_settings
from tests.support import LiveServer, Platform

Spawn = Callable[[str], tuple[subprocess.Popen[bytes], ServiceRecord]]
runner = CliRunner()


def test_status_and_down_when_nothing_runs() -> None:
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 1 and "not running" in r.stdout
    r = runner.invoke(app, ["status", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["running"] is False
    r = runner.invoke(app, ["down"])
    assert r.exit_code == 0 and r.stdout.strip() == "selfserve is not running"


def test_status_of_an_unhealthy_service_exits_1(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("api")
    _state.save(_state.state_path(get_settings().run_dir), State(services=[rec]))
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 1
    assert "unhealthy" in r.stdout and str(proc.pid) in r.stdout and "total resident memory" in r.stdout
    data = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert data["services"][0]["state"] == "unhealthy" and data["services"][0]["rss_mib"] > 0
    r = runner.invoke(app, ["down", "--timeout", "5"])
    assert r.exit_code == 0 and r.stdout.strip() == f"stopped api (pid {proc.pid})"


def test_up_with_a_busy_port_names_it_and_the_flag() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["up", "--console-port", str(port)])
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(f"error: cannot start: port {port} on 127.0.0.1 for console is already in use")
    assert "--console-port" in r.stderr and "SELFSERVE_SERVER__CONSOLE_PORT" in r.stderr


def test_demo_seeds_as_the_saved_login(sqlite_platform: Platform) -> None:
    with LiveServer(sqlite_platform.app) as server:
        r = runner.invoke(app, ["demo"])
        assert r.exit_code == 1 and r.stderr.startswith("error: not logged in")
        r = runner.invoke(
            app,
            ["login", "--url", server.url, "--username", "admin", "--password-stdin"],
            input=sqlite_platform.admin_password + "\n",
        )
        assert r.exit_code == 0, r.output
        seeded = [
            "project demo",
            "dataset demo/customers",
            "contract on demo/customers",
            "dataset demo/customer-features",
            "product demo/customer-features",
            "source demo/demo-files",
        ]
        # The unit suites run without Prefect: the flow step says it skips.
        skipped = "demo: flow demo/hourly-customers: skipped (pipelines are not enabled on this platform"
        first, again = runner.invoke(app, ["demo"]).stdout, runner.invoke(app, ["demo"]).stdout
        assert first.startswith("".join(f"demo: {s}: created\n" for s in seeded) + skipped), first
        assert again.startswith("".join(f"demo: {s}: already there\n" for s in seeded) + skipped), again
