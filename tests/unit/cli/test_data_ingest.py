from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cli.conftest import PASSWORD, Cli


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on a free port: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def events(first: int, last: int) -> str:
    return "".join(f"{i},{'click' if i % 3 else 'view'},{i * 1.5}\n" for i in range(first, last + 1))


@pytest.fixture
def alice(cli: Cli, www: tuple[Path, str]) -> Cli:
    """Alice owns ``churn``, whose source ``web`` is a CSV of 2000 events served over HTTP."""
    root, url = www
    (root / "events.csv").write_text("id,kind,amount\n" + events(1, 2000))
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    cli.ok("source", "add", "churn", "web", "--kind", "file", "--url", f"{url}/events.csv")
    return cli


def test_ingest_shows_progress_and_the_new_version(alice: Cli) -> None:
    assert alice.ok("source", "test", "churn", "web").stdout.startswith("ok: ")
    r = alice.ok(
        "ingest",
        "churn",
        "web",
        "--table",
        "events.csv",
        "--to",
        "events",
        "--batch-rows",
        "500",
        "--max-rows-per-second",
        "4000",
    )
    assert r.stdout.strip() == "ingest job 1 wrote 2,000 rows to events: version 0"
    assert "ingest job 1: succeeded" in r.stderr and "2,000 rows read" in r.stderr

    job = alice.json("ingest", "churn", "web", "--table", "events.csv", "--to", "events", "--mode", "overwrite")
    assert job["status"] == "succeeded" and job["result"] == {"dataset": "events", "version": 1, "rows": 2000}
    assert job["params"]["mode"] == "overwrite"
    history = alice.json("dataset", "history", "churn", "events")
    assert [(v["version"], v["operation"], v["rows"]) for v in history] == [(1, "overwrite", 2000), (0, "create", 2000)]
    assert history[0]["producer"]["source"] == "web"

    jobs = alice.json("dataset", "jobs", "churn")
    assert [(j["id"], j["kind"], j["status"]) for j in jobs] == [(2, "ingest", "succeeded"), (1, "ingest", "succeeded")]
    assert "events" in alice.ok("dataset", "jobs", "churn").stdout


def test_incremental_loads_read_only_new_rows(alice: Cli, www: tuple[Path, str]) -> None:
    root, _ = www
    load = ("ingest", "churn", "web", "--table", "events.csv", "--to", "events", "--incremental", "id")
    assert alice.json(*load)["result"]["rows"] == 2000
    r = alice.fails(*load)
    assert "no new rows in 'web' since id = 2000" in r.stderr
    assert "rows read" not in r.stderr  # the bar is gone; the error says what happened

    with (root / "events.csv").open("a") as f:
        f.write(events(2001, 2010))
    r = alice.ok(*load)
    assert r.stdout.strip() == "ingest job 3 wrote 10 rows to events: version 1"
    assert alice.json("dataset", "show", "churn", "events")["rows"] == 2010


def test_no_wait_then_follow_the_job(alice: Cli) -> None:
    r = alice.ok("ingest", "churn", "web", "-t", "events.csv", "--to", "events", "--no-wait")
    assert r.stdout.startswith("started ingest job 1 into events (")
    assert "`selfserve dataset job churn 1 --wait`" in r.stdout
    r = alice.ok("dataset", "job", "churn", "1", "--wait")
    assert re.search(r"^status +succeeded$", r.stdout, re.M) and re.search(r"^rows_read +2000$", r.stdout, re.M)
    shown = alice.json("dataset", "job", "churn", "1")
    assert shown["status"] == "succeeded" and shown["progress"]["rows_read"] == 2000

    started = json.loads(alice.ok("ingest", "churn", "web", "-t", "x", "--to", "events", "--no-wait", "--json").stdout)
    assert started["kind"] == "ingest" and started["status"] in ("queued", "running", "succeeded")
    assert "not found" in alice.fails("dataset", "job", "churn", "99").stderr


def test_ingest_errors(alice: Cli) -> None:
    alice.fails("ingest", "churn", "web", "--to", "events", code=2)
    alice.fails("ingest", "churn", "web", "--table", "t", "--query", "select 1", "--to", "events", code=2)
    alice.fails("ingest", "churn", "web", "--table", "t", code=2)
    alice.fails("ingest", "churn", "web", "--table", "t", "--to", "events", "--mode", "upsert", code=2)
    alice.fails("ingest", "churn", "web", "--table", "t", "--to", "events", "--option", "novalue", code=2)

    assert "source 'nope' not found" in alice.fails("ingest", "churn", "nope", "-t", "x", "--to", "events").stderr
    r = alice.fails("ingest", "churn", "web", "--query", "select 1", "--to", "events")
    assert "file sources take no query" in r.stderr
    r = alice.fails("ingest", "churn", "web", "-t", "x", "--to", "events", "--incremental", "missing")
    assert "cursor column 'missing'" in r.stderr
    assert alice.ok("dataset", "list", "churn").stdout.strip() == "(none)"  # failed loads commit nothing

    alice.add_user("victor")
    alice.ok("member", "add", "churn", "victor", "--role", "viewer")
    alice.login("victor", PASSWORD)
    assert "may not dataset:write" in alice.fails("ingest", "churn", "web", "-t", "x", "--to", "events").stderr
