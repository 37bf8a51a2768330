"""``selfserve flow``, ``selfserve run`` and scheduled ``ingest``/``transform``, without Prefect.

Parsing and usage errors need no server; the API's answers come from a fake transport that records
what the SDK sends; the refusal of a platform whose pipelines are off comes from the real API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from selfserve.cli import app
from selfserve.cli import run as run_cli
from selfserve.cli.flow import param_value, parse_params
from selfserve.client import Client
from selfserve.schemas.pipelines import FlowDeploymentPublic, LogLine, RunPublic
from tests.unit.cli.conftest import PASSWORD, Cli

NOW = datetime(2025, 3, 1, 2, 0, 0, tzinfo=UTC)
T = (NOW + timedelta(seconds=9)).isoformat()
RUN_ID = "0b6f3c2e-5d7a-4f7e-9a51-3c1de0a4b7f2"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def usage_error(*args: str) -> str:
    """Run a command that must be refused while its command line is parsed (exit 2); its message."""
    r = invoke(*args)
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}"
    assert "Traceback" not in r.output
    return " ".join(r.stderr.split())  # Typer wraps its error box: one line to match against


def deployment(**changes: Any) -> dict[str, Any]:
    d = {
        "name": "nightly",
        "kind": "user",
        "flow_name": "etl",
        "entrypoint": "etl.py:etl",
        "code_sha": "ab" * 32,
        "env_sha": None,
        "schedule": {"cron": "0 2 * * *", "interval_seconds": None, "timezone": "UTC"},
        "parameters": {"days": 7},
        "retries": 2,
        "timeout_seconds": 1800.0,
        "paused": False,
        "description": "",
        "created_by": "alice",
        "created_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
    }
    return {**d, **changes}


def run(state: str = "completed", **changes: Any) -> dict[str, Any]:
    ended = state in ("completed", "failed", "crashed", "cancelled")
    r = {
        "id": RUN_ID,
        "name": "witty-otter",
        "deployment": "nightly",
        "flow_name": None,
        "state": state,
        "state_name": state.title(),
        "message": None,
        "parameters": {"days": 7},
        "created_at": NOW.isoformat(),
        "expected_start_time": NOW.isoformat(),
        "start_time": NOW.isoformat() if state != "pending" else None,
        "end_time": (NOW + timedelta(seconds=3.25)).isoformat() if ended else None,
        "duration_seconds": 3.25 if ended else None,
        "run_count": 1,
    }
    return {**r, **changes}


def line(message: str, level: str = "INFO", second: int = 1) -> dict[str, Any]:
    return {"time": (NOW + timedelta(seconds=second)).isoformat(), "level": level, "message": message, "source": "x"}


class Pages(list[Any]):
    """Answers to a route given one per call, the last one repeated."""


class FakeApi:
    """Stands in for ``Client._request``: records each call and answers from ``answers[route]``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}

    def __call__(self, route: str, **kwargs: Any) -> Any:
        self.calls.append((route, kwargs))
        answer = self.answers[route]
        if isinstance(answer, Pages):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def sent(self, route: str) -> list[dict[str, Any]]:
        return [kw for r, kw in self.calls if r == route]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    monkeypatch.setattr(Client, "_request", lambda self, route, **kw: fake(route, **kw))
    monkeypatch.setattr(run_cli, "POLL_SECONDS", 0.0)
    yield fake


@pytest.fixture
def etl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etl.py").write_text("from prefect import flow\n\n@flow\ndef etl(days: int = 7):\n    return days\n")
    return tmp_path / "etl.py"


# -- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ("[1,2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ('"7"', "7"),
        ("eu-west", "eu-west"),
        ("", ""),
        ("NaN", "NaN"),  # Python's JSON extension, not JSON: kept as text
        ("[1,", "[1,"),
    ],
)
def test_param_values_are_json_when_they_parse(text: str, value: Any) -> None:
    assert param_value(text) == value
    assert type(param_value(text)) is type(value)


def test_params_split_at_the_first_equals_sign() -> None:
    assert parse_params(["days=7", "where=a=b", " tag =eu", "days=8"]) == {"days": 8, "where": "a=b", "tag": "eu"}


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("days", "'days' is not NAME=VALUE"),
        ("=7", "'' in '=7' is not a parameter name"),
        ("1x=7", "'1x' in '1x=7' is not a parameter name"),
        ("my-days=7", "'my-days' in 'my-days=7' is not a parameter name"),
    ],
)
def test_bad_params_are_usage_errors(etl: Path, param: str, message: str) -> None:
    assert message in usage_error("flow", "deploy", "p", "etl.py:etl", "--name", "n", "--param", param)
    assert message in usage_error("flow", "run", "p", "nightly", "--param", param)


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("etl.py", "'etl.py' is not FILE:FUNCTION (e.g. ./etl.py:etl): no ':'"),
        ("etl.py:", "'etl.py:' is not FILE:FUNCTION (e.g. ./etl.py:etl): no function after ':'"),
        (":etl", "':etl' is not FILE:FUNCTION (e.g. ./etl.py:etl): no file before ':'"),
        ("etl.py:my-flow", "'my-flow' is not a Python function name"),
        ("nope.py:etl", "'nope.py' is not a file"),
    ],
)
def test_bad_entrypoints_are_usage_errors(etl: Path, entrypoint: str, message: str) -> None:
    assert message in usage_error("flow", "deploy", "p", entrypoint, "--name", "n")


def test_schedule_errors_are_usage_errors(etl: Path, tmp_path: Path) -> None:
    deploy = ("flow", "deploy", "p", "etl.py:etl", "--name", "n")
    both = usage_error(*deploy, "--cron", "0 2 * * *", "--interval", "1h")
    assert "give either --cron or --interval, not both" in both
    assert "'0 2 * *' is not a cron expression of 5 fields" in usage_error(*deploy, "--cron", "0 2 * *")
    assert "not a duration: 'soon'" in usage_error(*deploy, "--interval", "soon")
    assert "not a duration: 'long'" in usage_error(*deploy, "--timeout", "long")
    assert "'0s' is not a positive duration" in usage_error(*deploy, "--interval", "0s")

    ingest = ("ingest", "p", "web", "--table", "events.csv", "--to", "events")
    both = usage_error(*ingest, "--schedule", "0 2 * * *", "--interval", "1h")
    assert "give either --schedule or --interval, not both" in both
    assert "is not a cron expression" in usage_error(*ingest, "--schedule", "nightly")
    assert "--name names a scheduled flow: give --schedule or --interval too" in usage_error(*ingest, "--name", "x")
    (tmp_path / "t.sql").write_text("select 1 as x")
    transform = ("transform", "p", "--sql", "t.sql", "--to", "daily")
    assert "not both" in usage_error(*transform, "--schedule", "0 2 * * *", "--interval", "1h")
    assert "--name names a scheduled flow" in usage_error(*transform, "--name", "x")

    assert "Invalid value for '--state'" in usage_error("run", "list", "p", "--state", "broken")


# -- what the SDK sends and what the CLI prints --------------------------------------------------------


def test_deploy_sends_typed_params_and_prints_json(api: FakeApi, etl: Path) -> None:
    api.answers["flows.deploy_code"] = deployment(parameters={"days": 7, "tags": ["a"], "dry": True, "tag": "eu"})
    r = invoke(
        "flow", "deploy", "churn", "./etl.py:etl", "--name", "nightly", "--cron", "0 2 * * *",
        "-p", "days=7", "--param", 'tags=["a"]', "--param", "dry=true", "--param", "tag=eu",
        "--retries", "2", "--timeout", "30m", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    (sent,) = api.sent("flows.deploy_code")
    spec = json.loads(sent["data"]["spec"])
    assert spec == {
        "name": "nightly",
        "entrypoint": "etl.py:etl",
        "parameters": {"days": 7, "tags": ["a"], "dry": True, "tag": "eu"},
        "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
        "retries": 2,
        "timeout_seconds": 1800.0,
        "description": "",
    }
    shown = json.loads(r.stdout)
    assert set(shown) == set(FlowDeploymentPublic.model_fields)
    assert shown["parameters"] == {"days": 7, "tags": ["a"], "dry": True, "tag": "eu"}


def test_deploy_prints_what_it_did(api: FakeApi, etl: Path) -> None:
    api.answers["flows.deploy_code"] = deployment(schedule={"cron": None, "interval_seconds": 3600, "timezone": "UTC"})
    r = invoke("flow", "deploy", "churn", "etl.py:etl", "--name", "nightly", "--interval", "1h")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "deployed user flow etl as nightly in churn; scheduled every 1h",
        "run it now with `selfserve flow run churn nightly`",
    ]
    assert json.loads(api.sent("flows.deploy_code")[0]["data"]["spec"])["schedule"]["interval_seconds"] == 3600


def test_flow_list_and_show(api: FakeApi) -> None:
    api.answers["flows.list"] = [deployment(), deployment(name="hourly", schedule=None, paused=True, parameters={})]
    listed = json.loads(invoke("flow", "list", "churn", "--json").stdout)
    assert [d["name"] for d in listed] == ["nightly", "hourly"]
    assert all(set(d) == set(FlowDeploymentPublic.model_fields) for d in listed)
    table = invoke("flow", "list", "churn").stdout
    assert re.search(r"nightly .* cron 0 2 \* \* \* \(UTC\)", table) and '{"days": 7}' in table

    api.answers["flows.get"] = deployment()
    shown = invoke("flow", "show", "churn", "nightly").stdout
    assert re.search(r"^schedule +cron 0 2 \* \* \* \(UTC\)$", shown, re.M)
    assert re.search(r"^timeout +30m$", shown, re.M) and re.search(r"^retries +2$", shown, re.M)
    assert json.loads(invoke("flow", "show", "churn", "nightly", "--json").stdout)["name"] == "nightly"


def test_run_without_watch_says_how_to_follow(api: FakeApi) -> None:
    api.answers["flows.run"] = run("scheduled", start_time=None)
    r = invoke("flow", "run", "churn", "nightly", "--param", "days=3")
    assert r.exit_code == 0, r.output
    assert api.sent("flows.run")[0]["json"] == {"parameters": {"days": 3}}
    assert f"started run witty-otter ({RUN_ID}) of nightly; it is scheduled" in r.stdout
    assert f"`selfserve run logs churn {RUN_ID} --follow`" in r.stdout
    started = json.loads(invoke("flow", "run", "churn", "nightly", "--json").stdout)
    assert set(started) == set(RunPublic.model_fields) and started["state"] == "scheduled"


def test_watch_follows_states_and_logs_and_exits_0_when_completed(api: FakeApi) -> None:
    api.answers["flows.run"] = run("scheduled")
    api.answers["runs.logs"] = Pages(
        [
            {"run": run("pending"), "lines": [], "next_after": None},
            {"run": run("running"), "lines": [line("start", second=1), line("total=12", second=2)], "next_after": T},
            {"run": run("completed"), "lines": [line("Finished in state Completed()", second=3)], "next_after": T},
            {"run": run("completed"), "lines": [], "next_after": T},
        ]
    )
    r = invoke("flow", "run", "churn", "nightly", "--watch")
    assert r.exit_code == 0, r.output
    out = [re.sub(r"^\d\d:\d\d:\d\d ", "", x) for x in r.stdout.splitlines()]
    assert out == [
        f"started run witty-otter ({RUN_ID}) of nightly",
        "run witty-otter: pending",
        "run witty-otter: running",
        "INFO    start",
        "INFO    total=12",
        "INFO    Finished in state Completed()",
        "run witty-otter: completed in 3.2s",
    ]
    assert r.stderr == ""


@pytest.mark.parametrize("state", ["failed", "crashed", "cancelled"])
def test_watch_exits_1_unless_completed(api: FakeApi, state: str) -> None:
    api.answers["flows.run"] = run("scheduled")
    message = "Flow run encountered an exception: ValueError: the source table is empty"
    api.answers["runs.logs"] = Pages(
        [
            {"run": run("running"), "lines": [line("ValueError: the source table is empty", "ERROR")], "next_after": T},
            {"run": run(state, message=message), "lines": [], "next_after": T},
        ]
    )
    r = invoke("flow", "run", "churn", "nightly", "--watch")
    assert r.exit_code == 1, r.output
    assert "ERROR   ValueError: the source table is empty" in r.stdout
    assert f"run witty-otter: {state}" in r.stdout
    assert r.stderr == f"error: run witty-otter ({RUN_ID}) {state}: {message}\n"

    api.answers["runs.get"] = run(state, message=message)
    r = invoke("flow", "run", "churn", "nightly", "--watch", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["state"] == state  # the run as it ended, and nothing else on stdout


def test_run_list_show_cancel(api: FakeApi) -> None:
    api.answers["runs.list"] = [run("failed", message="boom"), run("running", id="r2", duration_seconds=245.0)]
    listed = json.loads(invoke("run", "list", "churn", "--state", "failed", "--flow", "nightly", "--json").stdout)
    assert api.sent("runs.list")[0]["params"] == {"state": "failed", "flow": "nightly", "limit": 50}
    assert [r["id"] for r in listed] == [RUN_ID, "r2"]
    assert all(set(r) == set(RunPublic.model_fields) for r in listed)
    table = invoke("run", "list", "churn", "--limit", "5").stdout
    assert api.sent("runs.list")[1]["params"] == {"limit": 5}
    header = table.splitlines()[1]
    assert [c for c in re.split(r"[\s┃│]+", header) if c] == [
        "id",
        "deployment",
        "state",
        "start",
        "duration",
        "message",
    ]
    assert RUN_ID in table and "boom" in table and "3.2s" in table and "4m 05s" in table

    api.answers["runs.get"] = run("failed", message="boom", cpu_seconds=1.5, max_rss_bytes=52_000_000)
    shown = invoke("run", "show", "churn", RUN_ID).stdout
    assert re.search(r"^state +failed$", shown, re.M) and re.search(r"^max_rss +52.0 MB$", shown, re.M)
    assert json.loads(invoke("run", "show", "churn", RUN_ID, "--json").stdout)["cpu_seconds"] == 1.5

    api.answers["runs.cancel"] = run("cancelling", state_name="Cancelling")
    assert invoke("run", "cancel", "churn", RUN_ID).stdout == f"run witty-otter ({RUN_ID}): cancelling\n"


def test_run_logs_reads_every_page_once(api: FakeApi) -> None:
    # As the engine does, each page starts with the lines at its `after` time, which were seen already.
    first = [line(f"line {i}", second=i) for i in range(200)]
    tie = line("same second, later", second=199)
    api.answers["runs.logs"] = Pages(
        [
            {"run": run("completed"), "lines": first, "next_after": first[-1]["time"]},
            {"run": run("completed"), "lines": [first[-1], tie, line("last", second=300)], "next_after": T},
        ]
    )
    r = invoke("run", "logs", "churn", RUN_ID)
    assert r.exit_code == 0, r.output
    out = [x.split(" ", 1)[1] for x in r.stdout.splitlines()]
    assert len(out) == 202 and out[-3:] == ["INFO    line 199", "INFO    same second, later", "INFO    last"]
    assert api.sent("runs.logs")[1]["params"]["after"] == first[-1]["time"]

    api.answers["runs.logs"] = Pages([{"run": run("completed"), "lines": [line("only")], "next_after": None}])
    logs = json.loads(invoke("run", "logs", "churn", RUN_ID, "--json").stdout)
    assert logs == [{**LogLine.model_validate(line("only")).model_dump(mode="json")}]
    assert set(logs[0]) == {"time", "level", "message", "source"}

    a, b = line("a", second=1), line("b", second=2)
    api.answers["runs.logs"] = Pages(
        [
            {"run": run("running"), "lines": [a], "next_after": a["time"]},
            {"run": run("failed", message="boom"), "lines": [a, b], "next_after": b["time"]},
            {"run": run("failed", message="boom"), "lines": [b], "next_after": b["time"]},
        ]
    )
    r = invoke("run", "logs", "churn", RUN_ID, "--follow")
    assert [x.split(" ", 1)[1] for x in r.stdout.splitlines()] == ["INFO    a", "INFO    b"]
    assert r.exit_code == 0 and r.stderr == "run witty-otter failed: boom\n"


def test_scheduled_ingest_deploys_the_request_it_would_send_now(api: FakeApi) -> None:
    api.answers["datasets.ingest"] = {
        "id": 1,
        "kind": "ingest",
        "status": "queued",
        "params": {"to": "events"},
        "progress": {},
        "created_by": "alice",
        "created_at": NOW.isoformat(),
    }
    api.answers["flows.deploy_builtin"] = deployment(name="ingest-events", kind="builtin", flow_name="selfserve-ingest")
    args = ("ingest", "churn", "web", "-t", "events.csv", "--to", "events", "--incremental", "id")
    args += ("--batch-rows", "500", "--option", "delimiter=;", "--mode", "overwrite")
    assert invoke(*args, "--no-wait").exit_code == 0
    r = invoke(*args, "--schedule", "0 2 * * *")
    assert r.exit_code == 0, r.output
    (now,) = api.sent("datasets.ingest")
    (scheduled,) = api.sent("flows.deploy_builtin")
    assert scheduled["json"]["parameters"] == now["json"]
    assert now["json"] == {
        "source": "web",
        "to": "events",
        "table": "events.csv",
        "incremental": "id",
        "batch_rows": 500,
        "mode": "overwrite",
        "evolve": False,
        "options": {"delimiter": ";"},
    }
    assert scheduled["json"]["flow"] == "ingest" and scheduled["json"]["name"] == "ingest-events"
    assert scheduled["json"]["schedule"] == {"cron": "0 2 * * *", "timezone": "UTC"}
    assert (
        r.stdout.splitlines()[0] == "scheduled ingest into events as flow ingest-events in churn: cron 0 2 * * * (UTC)"
    )


def test_scheduled_transform_deploys_the_request_it_would_send_now(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "daily.sql").write_text("select kind, count(*) as n from events group by kind")
    api.answers["datasets.transform"] = {
        "id": 2,
        "kind": "transform",
        "status": "queued",
        "params": {"to": "daily"},
        "progress": {},
        "created_by": "alice",
        "created_at": NOW.isoformat(),
    }
    api.answers["flows.deploy_builtin"] = deployment(name="daily-counts", kind="builtin")
    args = ("transform", "churn", "--sql", str(tmp_path / "daily.sql"), "--to", "daily")
    assert invoke(*args, "--no-wait").exit_code == 0
    r = invoke(*args, "--interval", "1h", "--name", "daily-counts", "--json")
    assert r.exit_code == 0, r.output
    (now,) = api.sent("datasets.transform")
    (scheduled,) = api.sent("flows.deploy_builtin")
    # The SDK sends sql and polars even when unset; the deployment keeps only what is set.
    assert scheduled["json"]["parameters"] == {k: v for k, v in now["json"].items() if v is not None}
    assert scheduled["json"]["parameters"]["sql"].startswith("select kind")
    assert scheduled["json"]["name"] == "daily-counts" and scheduled["json"]["flow"] == "transform"
    assert scheduled["json"]["schedule"] == {"interval_seconds": 3600.0, "timezone": "UTC"}
    assert json.loads(r.stdout)["name"] == "daily-counts"


# -- the real API, pipelines off ------------------------------------------------------------------------


def test_pipelines_off_is_a_clear_503(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    cli.ok("source", "add", "churn", "web", "--kind", "file", "--url", "http://127.0.0.1:9/events.csv")
    off = "error: pipelines are not enabled on this platform (setting pipelines.enabled)\n"
    for args in (
        ("run", "list", "churn"),
        ("ingest", "churn", "web", "-t", "events.csv", "--to", "events", "--schedule", "0 2 * * *"),
    ):
        r = cli.fails(*args, code=3)
        assert r.stderr == off, r.output
    assert cli.json("flow", "list", "churn") == []  # what the platform holds is still readable
    r = cli.fails("flow", "show", "churn", "nightly")
    assert r.stderr == "error: flow deployment 'nightly' not found in project 'churn'\n"
