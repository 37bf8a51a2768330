"""``selfserve up`` / ``status`` / ``down`` for real: the CLI as a subprocess, real API and console
processes on free ports, a fresh SELFSERVE_HOME. Every test stops what it started."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support import REPO, free_port

pytestmark = pytest.mark.e2e

REAL_CONSOLE = REPO / "services" / "console" / "app.py"
MINIMAL_CONSOLE = 'import streamlit as st\n\nst.title("selfserve console")\n'


@dataclass
class Platform:
    home: Path
    env: dict[str, str]
    api_port: int
    console_port: int

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "selfserve.cli", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.run(*args)
        assert r.returncode == 0, f"selfserve {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def up(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--api-port", str(self.api_port), "--console-port", str(self.console_port), *args)

    @property
    def state_file(self) -> Path:
        return self.home / "run" / "state.json"

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def processes(self) -> set[int]:
        """Live processes working in this platform's home: what ``up`` started, by its working directory."""
        found = set()
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and Path(p.cwd()) == self.home:
                    found.add(p.pid)
            except psutil.Error:
                continue
        return found


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SELFSERVE_HOME": str(home),
        "SELFSERVE_CONFIG_DIR": str(tmp_path / "config"),
    }
    if not REAL_CONSOLE.exists():
        app = tmp_path / "console.py"
        app.write_text(MINIMAL_CONSOLE)
        env["SELFSERVE_CONSOLE__APP_PATH"] = str(app)
    p = Platform(home.resolve(), env, free_port(), free_port())
    try:
        yield p
    finally:
        r = p.run("down", timeout=60)
        assert r.returncode == 0, r.stderr
        assert p.processes() == set()


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def test_up_status_down_and_up_again(platform: Platform) -> None:
    api_url = f"http://127.0.0.1:{platform.api_port}"
    console_url = f"http://127.0.0.1:{platform.console_port}"

    # First start: URLs, the admin's generated password once, the CLI logged in, the demo project.
    r = platform.up()
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert api_url in r.stdout and console_url in r.stdout
    credentials = platform.home / "admin-credentials.txt"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    saved = dict(line.split(": ", 1) for line in credentials.read_text().splitlines())
    assert f"admin user      {saved['user']}" in r.stdout
    assert f"admin password  {saved['password']}" in r.stdout
    assert "shown once; also saved 0600 in" in r.stdout
    assert "demo: project demo: created" in r.stdout
    assert "demo: dataset demo/customer-features: created" in r.stdout

    # Status: both services healthy, with their memory.
    status = json.loads(platform.ok("status", "--json").stdout)
    assert status["running"] and status["healthy"]
    services = {s["name"]: s for s in status["services"]}
    assert set(services) == {"api", "console"}
    for s in services.values():
        assert s["state"] == "running" and s["health"] == "ok" and s["rss_mib"] > 10
    assert services["api"]["url"] == api_url and services["console"]["url"] == console_url
    assert status["total_rss_mib"] == pytest.approx(sum(s["rss_mib"] for s in services.values()), abs=0.2)
    assert "total resident memory" in platform.ok("status").stdout

    assert httpx.get(f"{api_url}/api/v1/health").json()["status"] == "ok"
    assert httpx.get(f"{console_url}/_stcore/health").status_code == 200
    me = json.loads(platform.ok("whoami", "--json").stdout)
    assert me["user"]["name"] == saved["user"] and me["user"]["is_admin"]
    assert json.loads(platform.ok("project", "show", "demo", "--json").stdout)["name"] == "demo"

    # A second `up` refuses and starts nothing.
    state_before = platform.state_file.read_text()
    running = platform.processes()
    pids = {s["pid"] for s in platform.state()["services"]}
    assert pids <= running
    r = platform.up()
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: selfserve is already running (api pid {services['api']['pid']} at {api_url})")
    assert "run `selfserve down` first" in r.stderr
    assert platform.state_file.read_text() == state_before
    assert platform.processes() == running

    # Down stops every process of the platform, children included.
    tree = set(running)
    for pid in pids:
        tree |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
    r = platform.ok("down")
    assert r.stdout.startswith("stopped api (pid")
    assert _alive(tree) == set()
    assert not platform.state_file.exists()
    assert platform.run("status").returncode == 1
    assert platform.ok("down").stdout.strip() == "selfserve is not running"

    # Up again: same admin, no password shown, the saved login still works, the demo is left as it is.
    r = platform.up()
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert saved["password"] not in r.stdout and "admin password" not in r.stdout
    assert "demo: project demo: already there" in r.stdout
    assert json.loads(platform.ok("status", "--json").stdout)["healthy"]
    again = platform.ok("demo").stdout.splitlines()
    # A step this machine cannot take (pipelines off, or no file root for the demo's data) says why it skipped.
    assert again[0] == "demo: project demo: already there"
    assert all(line.endswith(": already there") or ": skipped (" in line for line in again), again
    assert "demo: product demo/customer-features: already there" in again


def test_a_busy_port_is_named_and_nothing_starts(platform: Platform) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", platform.api_port))
        s.listen()
        r = platform.up()
    assert r.returncode == 1
    assert f"port {platform.api_port} on 127.0.0.1 for api is already in use" in r.stderr
    assert "--api-port" in r.stderr and "SELFSERVE_SERVER__API_PORT" in r.stderr
    assert not platform.state_file.exists()
    assert not (platform.home / "selfserve.db").exists()
    assert platform.processes() == set()


def test_a_service_that_fails_to_start_stops_everything(platform: Platform, tmp_path: Path) -> None:
    platform.env["SELFSERVE_CONSOLE__APP_PATH"] = str(tmp_path / "missing" / "app.py")
    r = platform.up("--timeout", "60")
    assert r.returncode == 1
    assert r.stderr.startswith("error: console exited with code")
    assert "Last 20 lines of" in r.stderr and "console.log" in r.stderr
    assert "does not exist" in r.stderr, "the log's end is shown"
    assert f"its password is in {platform.home / 'admin-credentials.txt'}" in r.stderr
    assert not platform.state_file.exists()
    assert platform.processes() == set()
    assert platform.ok("down").stdout.strip() == "selfserve is not running"
