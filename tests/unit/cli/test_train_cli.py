"""``selfserve train``, without Prefect or MLflow.

Parsing and usage errors need no server; the API's answers come from a fake transport that records
what the SDK sends (as in test_pipelines_cli); the checks the platform makes when the train flow is
deployed come from the real API, whose pipelines are off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner, Result

from selfserve.cli import app
from selfserve.cli import run as run_cli
from selfserve.client import Client
from selfserve.errors import NotFound
from selfserve.schemas.pipelines import RunPublic
from selfserve.schemas.training import RESULT_PREFIX
from tests.support import upload_table
from tests.unit.cli.conftest import PASSWORD, Cli
from tests.unit.cli.test_pipelines_cli import RUN_ID, FakeApi, Pages, T, deployment, line, run

TRAIN = ("train", "churn", "--dataset", "features@3", "--target", "churned", "--task", "classification")
TRAIN += ("--model", "clf")
RESULT = {
    "model": "clf",
    "registered_model": "churn.clf",
    "version": 4,
    "candidate": "gb",
    "metric": "f1",
    "value": 0.91234,
    "champion_before": {"version": 3, "value": 0.9},
    "promoted": True,
    "reason": "f1 0.9123 beats the champion's (version 3) 0.9000 by 0.0123, more than the margin 0",
    "candidates": [{"name": "gb", "validation": {"f1": 0.93, "roc_auc": None}}],
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def usage_error(*args: str) -> str:
    r = invoke(*args)
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}"
    assert "Traceback" not in r.output
    return " ".join(r.stderr.split())


class Api(FakeApi):
    """FakeApi whose answer may be an error to raise, as the SDK would."""

    def __call__(self, route: str, **kwargs: Any) -> Any:
        answer = super().__call__(route, **kwargs)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    fake = Api()
    monkeypatch.setattr(Client, "_request", lambda self, route, **kw: fake(route, **kw))
    monkeypatch.setattr(run_cli, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(run_cli, "GRACE_SECONDS", 0.0)
    fake.answers["flows.get"] = NotFound("flow deployment 'train-clf' not found in project 'churn'")
    fake.answers["flows.deploy_builtin"] = deployment(
        name="train-clf", kind="builtin", flow_name="selfserve-train", schedule=None
    )
    fake.answers["flows.run"] = run("scheduled", deployment="train-clf", start_time=None)
    yield fake


def result_line(result: dict[str, Any] = RESULT, second: int = 5) -> dict[str, Any]:
    return line(RESULT_PREFIX + json.dumps(result), second=second)


# -- parsing -----------------------------------------------------------------------------------------


def test_usage_errors() -> None:
    assert "'features@latest' is not DATASET or DATASET@VERSION" in usage_error(
        *TRAIN[:3], "features@latest", *TRAIN[4:]
    )
    assert "unknown candidate(s) xgb; candidates are: rf, gb, linear" in usage_error(*TRAIN, "--candidates", "rf,xgb")
    assert "each candidate may be named once" in usage_error(*TRAIN, "--candidates", "rf,rf")
    assert "',' names nothing" in usage_error(*TRAIN, "--exclude", ",")
    assert "Invalid value for '--task'" in usage_error(*TRAIN[:6], "--task", "ranking", *TRAIN[8:])
    assert "Invalid value for '--metric'" in usage_error(*TRAIN, "--metric", "auc")
    assert "Invalid value for '--tune-trials'" in usage_error(*TRAIN, "--tune-trials", "500")
    assert "Invalid value for '--margin'" in usage_error(*TRAIN, "--margin", "-0.1")
    both = usage_error(*TRAIN, "--schedule", "0 2 * * *", "--interval", "1h")
    assert "give either --schedule or --interval, not both" in both
    assert "Missing option '--target'" in usage_error("train", "churn", "--dataset", "f", "--task", "regression")


# -- what the SDK sends and what the CLI prints --------------------------------------------------------


def test_no_wait_deploys_the_request_and_starts_a_run(api: Api) -> None:
    r = invoke(
        *TRAIN, "--metric", "roc_auc", "--candidates", "rf, gb", "--tune-trials", "5", "--margin", "0.01",
        "--test-size", "0.25", "--seed", "7", "--exclude", "customer_id,signup", "--no-wait",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    (sent,) = api.sent("flows.deploy_builtin")
    assert sent["json"] == {
        "flow": "train",
        "name": "train-clf",
        "parameters": {
            "dataset": {"name": "features", "version": 3},
            "target": "churned",
            "task": "classification",
            "model": "clf",
            "metric": "roc_auc",
            "candidates": ["rf", "gb"],
            "tune_trials": 5,
            "margin": 0.01,
            "test_size": 0.25,
            "seed": 7,
            "exclude": ["customer_id", "signup"],
        },
        "schedule": None,
        "retries": 0,
        "timeout_seconds": None,
        "description": "",
    }
    assert api.sent("flows.run")[0]["name"] == "train-clf"
    assert r.stdout.splitlines() == [
        "deployed training of model clf as flow train-clf in churn",
        f"started run witty-otter ({RUN_ID}) of train-clf; it is scheduled",
        f"follow it with `selfserve run logs churn {RUN_ID} --follow`",
    ]


def test_only_what_is_given_is_sent(api: Api) -> None:
    r = invoke("train", "churn", "-d", "features", "-t", "price", "--task", "regression", "-m", "reg", "--no-wait")
    assert r.exit_code == 0, r.output
    (sent,) = api.sent("flows.deploy_builtin")
    assert sent["json"]["name"] == "train-reg"
    assert sent["json"]["parameters"] == {
        "dataset": {"name": "features"},
        "target": "price",
        "task": "regression",
        "model": "reg",
    }


def test_a_schedule_deploys_without_running(api: Api) -> None:
    api.answers["flows.deploy_builtin"] = deployment(name="nightly-clf", kind="builtin", flow_name="selfserve-train")
    r = invoke(*TRAIN, "--schedule", "0 2 * * *", "--name", "nightly-clf")
    assert r.exit_code == 0, r.output
    (sent,) = api.sent("flows.deploy_builtin")
    assert sent["json"]["name"] == "nightly-clf"
    assert sent["json"]["schedule"] == {"cron": "0 2 * * *", "timezone": "UTC"}
    assert api.sent("flows.run") == [] and api.sent("flows.get") == []
    assert (
        r.stdout.splitlines()[0] == "scheduled training of model clf as flow nightly-clf in churn: cron 0 2 * * * (UTC)"
    )

    api.answers["flows.deploy_builtin"] = deployment(name="train-clf", kind="builtin")
    r = invoke(*TRAIN, "--interval", "6h", "--json")
    assert r.exit_code == 0, r.output
    assert api.sent("flows.deploy_builtin")[1]["json"]["schedule"] == {"interval_seconds": 21600.0, "timezone": "UTC"}
    assert json.loads(r.stdout)["name"] == "train-clf"


def test_running_now_keeps_the_schedule_the_deployment_has(api: Api) -> None:
    every_hour = {"cron": None, "interval_seconds": 3600.0, "timezone": "UTC"}
    api.answers["flows.get"] = deployment(name="train-clf", kind="builtin", schedule=every_hour)
    api.answers["flows.deploy_builtin"] = deployment(name="train-clf", kind="builtin", schedule=every_hour)
    r = invoke(*TRAIN, "--no-wait")
    assert r.exit_code == 0, r.output
    assert api.sent("flows.deploy_builtin")[0]["json"]["schedule"] == {"interval_seconds": 3600.0, "timezone": "UTC"}
    assert (
        r.stdout.splitlines()[0]
        == "deployed training of model clf as flow train-clf in churn; it keeps its schedule, every 1h"
    )


def test_wait_follows_the_run_and_tells_the_result(api: Api) -> None:
    api.answers["runs.logs"] = Pages(
        [
            {
                "run": run("running"),
                "lines": [line("dataset features: version 3 (as requested)", second=1)],
                "next_after": T,
            },
            {
                "run": run("completed"),
                "lines": [
                    line("gb: validation f1 0.9300 (0.4s)", second=2),
                    line("promoted: f1 0.9123 beats the champion's (version 3) 0.9000", second=4),
                    result_line(),
                ],
                "next_after": T,
            },
            {"run": run("completed"), "lines": [], "next_after": T},
        ]
    )
    r = invoke(*TRAIN)
    assert r.exit_code == 0, r.output
    out = [re.sub(r"^\d\d:\d\d:\d\d ", "", x) for x in r.stdout.splitlines()]
    assert out == [
        "deployed training of model clf as flow train-clf in churn",
        f"started run witty-otter ({RUN_ID}) of train-clf",
        "run witty-otter: running",
        "INFO    dataset features: version 3 (as requested)",
        "INFO    gb: validation f1 0.9300 (0.4s)",
        "INFO    promoted: f1 0.9123 beats the champion's (version 3) 0.9000",
        "run witty-otter: completed in 3.2s",
        "version 4 of model clf (gb): held-out f1 0.9123; alias challenger",
        f"promoted to champion ({RESULT['reason']})",
    ]
    assert r.stderr == ""


def test_a_kept_champion_is_said(api: Api) -> None:
    kept = {**RESULT, "promoted": False, "reason": "f1 0.8 does not beat the champion's (version 3) 0.9"}
    api.answers["runs.logs"] = Pages([{"run": run("completed"), "lines": [result_line(kept)], "next_after": T}])
    r = invoke(*TRAIN)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == f"not promoted: the champion stays ({kept['reason']})"


def test_a_failed_run_exits_1_with_its_error(api: Api) -> None:
    message = "Flow run encountered an exception: InvalidInput: target column 'churned' is not in dataset features@3"
    api.answers["runs.logs"] = Pages(
        [
            {
                "run": run("running"),
                "lines": [line("InvalidInput: target column 'churned' is not in", "ERROR")],
                "next_after": T,
            },
            {"run": run("failed", message=message), "lines": [], "next_after": T},
        ]
    )
    r = invoke(*TRAIN)
    assert r.exit_code == 1, r.output
    assert "ERROR   InvalidInput: target column 'churned' is not in" in r.stdout
    assert "promoted" not in r.stdout
    assert r.stderr == f"error: run witty-otter ({RUN_ID}) failed: {message}\n"


def test_json_prints_the_run_and_its_result(api: Api) -> None:
    api.answers["runs.logs"] = Pages(
        [
            {"run": run("completed"), "lines": [line("start"), line("Finished", second=6)], "next_after": T},
            {"run": run("completed"), "lines": [result_line()], "next_after": T},  # it trails the final state
            {"run": run("completed"), "lines": [], "next_after": T},
        ]
    )
    r = invoke(*TRAIN, "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert set(shown) == {"run", "result"} and set(shown["run"]) == set(RunPublic.model_fields)
    assert shown["result"] == RESULT

    crashed = run("crashed", message="the run used 2 GiB, over its memory limit")
    api.answers["runs.logs"] = Pages([{"run": crashed, "lines": [], "next_after": T}])
    r = invoke(*TRAIN, "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["result"] is None and "over its memory limit" in r.stderr


# -- the real API: what deploying the train flow checks ----------------------------------------------------


@pytest.fixture
def churn(cli: Cli, tmp_path: Path) -> Cli:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    alice = cli.platform.client()
    alice.login("alice", PASSWORD, save=False)
    table = pa.table({"tenure": [1, 2, 3], "plan": ["a", "b", "a"], "churned": [0, 1, 0]})
    upload_table(alice, "churn", "features", table, tmp_path)
    return cli


def test_deploying_checks_the_dataset_and_columns(churn: Cli) -> None:
    base = ("train", "churn", "--task", "classification", "--model", "clf", "--target", "churned")
    r = churn.fails(*base, "--dataset", "nope")
    assert r.stderr == "error: dataset 'nope' not found in project 'churn'\n"
    r = churn.fails(*base, "--dataset", "features@4")
    assert r.stderr == "error: dataset 'features' has no version 4\n"
    r = churn.fails(*base, "--dataset", "features", "--exclude", "id,plan", "--features", "tenure,age")
    assert r.stderr == (
        "error: invalid train parameters: column(s) 'age', 'id' not in dataset 'features'; "
        "its columns are: tenure, plan, churned\n"
    )
    r = churn.fails(*base, "--dataset", "features", "--metric", "rmse")
    assert "invalid train parameters" in r.stderr and "metric 'rmse' is not one of classification's" in r.stderr
    # Everything checks out: only then does the absence of MLflow (off in these tests) show.
    r = churn.fails(*base, "--dataset", "features@0", code=3)
    assert r.stderr == "error: models are not enabled on this platform (setting models.enabled)\n"


def test_deploying_needs_the_right_to_register_and_promote(churn: Cli) -> None:
    churn.add_user("bob")
    churn.ok("member", "add", "churn", "bob", "--role", "engineer")
    churn.login("bob", PASSWORD)
    r = churn.fails("train", "churn", "-d", "features", "-t", "churned", "--task", "classification", "-m", "clf")
    assert r.stderr == "error: role 'engineer' may not model:promote in project 'churn'\n"
