"""The ``selfserve`` command, run as a process, deploying and running flows on the real stack
(``selfserve up`` with a Prefect server and the platform's worker)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_stack import Stack

pytestmark = pytest.mark.integration

ETL = """
from prefect import flow, get_run_logger

@flow
def etl(days: int = 7, label: str = "none") -> int:
    total = sum(2 * i for i in range(days))
    get_run_logger().info("total=%s label=%s", total, label)
    return total
"""

FAILS = """
from prefect import flow

@flow
def broken():
    raise ValueError("the source table is empty")
"""

SLOW = """
import time
from prefect import flow

@flow
def slow():
    time.sleep(120)
"""


@dataclass
class Shell:
    """Runs ``selfserve`` in a new process, logged in with an API token of the owner of ``project``."""

    env: dict[str, str]
    cwd: Path
    project: str

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "selfserve.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self(*args)
        assert r.returncode == 0, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, *args: str, code: int = 1) -> subprocess.CompletedProcess[str]:
        r = self(*args)
        assert r.returncode == code, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") or "\nerror: " in r.stderr, r.stderr
        return r

    def write(self, name: str, text: str) -> str:
        (self.cwd / name).write_text(text)
        return f"./{name}"


@pytest.fixture
def sh(pipeline_env: Stack, tmp_path: Path) -> Shell:
    owner = pipeline_env.user(f"cli-{uuid.uuid4().hex[:8]}")
    project = pipeline_env.project(owner, prefix="cli")
    token = owner.tokens.create("cli").token
    env = {
        **os.environ,
        "SELFSERVE_URL": pipeline_env.url,
        "SELFSERVE_TOKEN": token,
        "SELFSERVE_CONFIG_DIR": str(tmp_path / "cli-config"),
    }
    work = tmp_path / "work"
    work.mkdir()
    return Shell(env=env, cwd=work, project=project)


def started_run_id(stdout: str) -> str:
    m = re.search(r"^started run \S+ \(([0-9a-f-]{36})\)", stdout, re.M)
    assert m, stdout
    return m.group(1)


def test_deploy_list_show_and_watch_a_run_that_completes(sh: Shell) -> None:
    p = sh.project
    deployed = sh.json(
        "flow", "deploy", p, sh.write("etl.py", ETL) + ":etl", "--name", "nightly", "--cron", "0 2 * * *",
        "--param", "days=3", "--param", "label=eu", "--retries", "1", "--timeout", "10m",
    )  # fmt: skip
    assert deployed["parameters"] == {"days": 3, "label": "eu"}
    assert deployed["schedule"]["cron"] == "0 2 * * *" and deployed["kind"] == "user"
    assert deployed["retries"] == 1 and deployed["timeout_seconds"] == 600 and deployed["entrypoint"] == "etl.py:etl"

    listed = sh.ok("flow", "list", p).stdout
    assert re.search(r"nightly .* user .* etl .* cron 0 2 \* \* \* \(UTC\)", listed), listed
    shown = sh.ok("flow", "show", p, "nightly").stdout
    assert re.search(r"^parameters +\{\"days\": 3, \"label\": \"eu\"\}$", shown, re.M), shown
    assert sh.json("flow", "show", p, "nightly")["name"] == "nightly"

    r = sh.ok("flow", "run", p, "nightly", "--param", "days=4", "--watch")
    run_id = started_run_id(r.stdout)
    assert "total=12 label=eu" in r.stdout  # the override and the deployment's own parameter
    # States as they change (a short run may skip some between two looks), the final one last.
    assert re.search(r"^run \S+: (scheduled|pending|running)$", r.stdout, re.M), r.stdout
    assert re.fullmatch(r"run \S+: completed in \d+\.\ds", r.stdout.splitlines()[-1]), r.stdout
    assert r.stdout.index("total=12") < r.stdout.index(": completed")

    run = sh.json("run", "show", p, run_id)
    assert run["state"] == "completed" and run["parameters"] == {"days": 4, "label": "eu"}
    assert run["deployment"] == "nightly"
    assert re.search(r"^\d\d:\d\d:\d\d INFO +total=12 label=eu$", sh.ok("run", "logs", p, run_id).stdout, re.M)
    assert any(line["message"] == "total=12 label=eu" for line in sh.json("run", "logs", p, run_id))
    followed = sh.ok("run", "logs", p, run_id, "--follow")
    assert "total=12 label=eu" in followed.stdout and followed.stderr.startswith("run ")

    completed = sh.json("run", "list", p, "--state", "completed")
    assert [r["id"] for r in completed] == [run_id]
    table = sh.ok("run", "list", p, "--flow", "nightly").stdout
    assert run_id in table and "completed" in table
    assert sh.json("run", "list", p, "--state", "failed") == []


def test_watch_a_run_that_fails(sh: Shell) -> None:
    p = sh.project
    sh.ok("flow", "deploy", p, sh.write("broken.py", FAILS) + ":broken", "--name", "broken")
    r = sh.fails("flow", "run", p, "broken", "--watch")
    run_id = started_run_id(r.stdout)
    assert "ValueError: the source table is empty" in r.stdout  # the error, in the logs as they came
    assert re.fullmatch(r"run \S+: failed", r.stdout.splitlines()[-1]), r.stdout
    assert re.search(rf"^error: run \S+ \({run_id}\) failed: .*the source table is empty", r.stderr, re.M), r.stderr

    failed = sh.json("run", "list", p, "--state", "failed")
    assert [r["id"] for r in failed] == [run_id]
    assert run_id in sh.ok("run", "list", p, "--state", "failed").stdout
    assert "the source table is empty" in sh.ok("run", "logs", p, run_id).stdout
    assert sh.json("run", "show", p, run_id)["state"] == "failed"


def test_cancel_a_run(sh: Shell) -> None:
    p = sh.project
    sh.ok("flow", "deploy", p, sh.write("slow.py", SLOW) + ":slow", "--name", "slow")
    run_id = started_run_id(sh.ok("flow", "run", p, "slow").stdout)
    r = sh.ok("run", "cancel", p, run_id)
    assert re.search(rf"^run \S+ \({run_id}\): (cancelling|cancelled)", r.stdout), r.stdout
    r = sh.ok("run", "logs", p, run_id, "--follow")
    assert r.stderr.startswith("run ") and "cancelled" in r.stderr
    assert "has already ended (cancelled)" in sh.fails("run", "cancel", p, run_id).stderr


def test_pause_resume_delete(sh: Shell) -> None:
    p = sh.project
    sh.ok("flow", "deploy", p, sh.write("etl.py", ETL) + ":etl", "--name", "hourly", "--interval", "1h")
    assert sh.ok("flow", "pause", p, "hourly").stdout.startswith("paused hourly")
    assert sh.json("flow", "show", p, "hourly")["paused"] is True
    assert sh.ok("flow", "resume", p, "hourly").stdout.strip() == "resumed hourly: scheduled every 1h"
    assert sh.json("flow", "show", p, "hourly")["paused"] is False
    assert sh.ok("flow", "delete", p, "hourly").stdout.strip() == "deleted flow deployment hourly"
    assert sh.json("flow", "list", p) == []
    r = sh.fails("flow", "show", p, "hourly")
    assert r.stderr.strip() == f"error: flow deployment 'hourly' not found in project '{p}'"
    assert "not found" in sh.fails("flow", "run", p, "hourly").stderr


def test_deploy_errors(sh: Shell) -> None:
    p = sh.project
    etl = sh.write("etl.py", ETL)
    r = sh(*("flow", "deploy", p, etl, "--name", "x"))
    assert r.returncode == 2 and "is not FILE:FUNCTION" in r.stderr
    r = sh(*("flow", "deploy", p, f"{etl}:etl", "--name", "x", "--cron", "0 2 * * *", "--interval", "1h"))
    assert r.returncode == 2 and "not both" in r.stderr
    r = sh.fails("flow", "deploy", p, f"{etl}:etl", "--name", "x", "--param", "weeks=2")
    assert "unknown parameter" in r.stderr
    r = sh.fails("flow", "deploy", p, f"{etl}:main", "--name", "x")
    assert "main" in r.stderr
    assert sh.json("flow", "list", p) == []


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on a free port: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_ingest_and_transform_on_a_schedule(sh: Shell, www: tuple[Path, str]) -> None:
    p = sh.project
    root, url = www
    (root / "events.csv").write_text("id,kind\n" + "".join(f"{i},{'view' if i % 3 else 'click'}\n" for i in range(30)))
    sh.ok("source", "add", p, "web", "--kind", "file", "--url", f"{url}/events.csv")

    r = sh.ok("ingest", p, "web", "--table", "events.csv", "--to", "events", "--schedule", "0 3 * * *")
    assert (
        r.stdout.splitlines()[0] == f"scheduled ingest into events as flow ingest-events in {p}: cron 0 3 * * * (UTC)"
    )
    dep = sh.json("flow", "show", p, "ingest-events")
    assert dep["kind"] == "builtin" and dep["schedule"]["cron"] == "0 3 * * *"
    assert dep["parameters"] == {"project": p, "request": {"source": "web", "to": "events", "table": "events.csv"}}
    assert sh.json("dataset", "list", p) == []  # scheduled, not run

    (sh.cwd / "counts.sql").write_text("select kind, count(*) as n from events group by kind")
    r = sh.ok("transform", p, "--sql", "counts.sql", "--to", "counts", "--interval", "6h", "--name", "counts")
    assert r.stdout.startswith(f"scheduled transform into counts as flow counts in {p}: every 6h")
    dep = sh.json("flow", "show", p, "counts")
    assert (
        dep["parameters"]["request"]["sql"].startswith("select kind") and dep["schedule"]["interval_seconds"] == 21600
    )

    # The built-in deployments run on demand too, with what they were deployed with.
    sh.ok("flow", "run", p, "ingest-events", "--watch")
    sh.ok("flow", "run", p, "counts", "--watch")
    assert sh.json("dataset", "show", p, "events")["rows"] == 30
    assert sh.json("dataset", "show", p, "counts")["rows"] == 2
    r = sh.fails("flow", "run", p, "counts", "--param", "x=1")
    assert "built-in flow deployments run with the parameters they were deployed with" in r.stderr
