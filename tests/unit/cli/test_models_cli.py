"""``selfserve experiment``, ``selfserve model`` and ``selfserve run compare``, without MLflow.

Parsing and usage errors need no server; the API's answers come from a fake transport that records
what the SDK sends; the refusal of a platform whose models are off comes from the real API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from selfserve.cli import app
from selfserve.client import Client
from selfserve.client._models import sort_key
from selfserve.errors import InvalidInput
from selfserve.schemas.models import (
    ExperimentPublic,
    ExperimentRun,
    ModelDetail,
    ModelLineage,
    ModelVersionPublic,
    PromotionPublic,
    RunComparison,
)
from tests.unit.cli.conftest import PASSWORD, Cli

NOW = datetime(2025, 3, 1, 2, 0, 0, tzinfo=UTC)
RUN_A = "a1" * 16
RUN_B = "b2" * 16


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def usage_error(*args: str) -> str:
    """Run a command that must be refused while its command line is parsed (exit 2); its message."""
    r = invoke(*args)
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}"
    assert "Traceback" not in r.output
    return " ".join(r.stderr.split())


def ok(*args: str) -> Result:
    r = invoke(*args)
    assert r.exit_code == 0, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
    return r


def experiment(**changes: Any) -> dict[str, Any]:
    e = {
        "name": "churn",
        "mlflow_name": "p/churn",
        "id": "1",
        "runs": 2,
        "last_run_at": NOW.isoformat(),
        "created_at": NOW.isoformat(),
    }
    return {**e, **changes}


def mlflow_run(run_id: str = RUN_A, **changes: Any) -> dict[str, Any]:
    r = {
        "id": run_id,
        "name": "rf-0",
        "experiment": "churn",
        "status": "finished",
        "start_time": NOW.isoformat(),
        "end_time": (NOW + timedelta(seconds=12.5)).isoformat(),
        "duration_seconds": 12.5,
        "params": {"model": "rf", "n_estimators": "100"},
        "metrics": {"f1": 0.812345, "accuracy": 0.9},
        "datasets": [{"name": "customers", "version": "3", "context": "training", "digest": "ab12"}],
        "model_versions": [{"model": "churn", "version": 2}],
        "parent_id": None,
        "flow_run_id": None,
        "user": "alice",
    }
    return {**r, **changes}


def version(n: int = 2, **changes: Any) -> dict[str, Any]:
    v = {
        "model": "churn",
        "version": n,
        "status": "ready",
        "aliases": ["champion"] if n == 2 else [],
        "run_id": RUN_A,
        "experiment": "churn",
        "metric": "f1",
        "metric_value": 0.80004,
        "metrics": {"f1": 0.8123},
        "description": "",
        "created_at": NOW.isoformat(),
    }
    return {**v, **changes}


def promotion(action: str = "promote", v: int = 3, previous: int | None = 2, **changes: Any) -> dict[str, Any]:
    p = {
        "model": "churn",
        "version": v,
        "previous_version": previous,
        "action": action,
        "reason": "better f1",
        "actor": "alice",
        "at": NOW.isoformat(),
    }
    return {**p, **changes}


def model(**changes: Any) -> dict[str, Any]:
    m = {
        "name": "churn",
        "mlflow_name": "p.churn",
        "description": "",
        "aliases": {"champion": 2, "challenger": 3},
        "champion": 2,
        "challenger": 3,
        "latest_version": 3,
        "created_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
    }
    return {**m, **changes}


class FakeApi:
    """Stands in for ``Client._request``: records each call and answers from ``answers[route]``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}

    def __call__(self, route: str, **kwargs: Any) -> Any:
        self.calls.append((route, kwargs))
        return self.answers[route]

    def sent(self, route: str) -> list[dict[str, Any]]:
        """What each call of ``route`` sent (path values, params, json), without the arguments left unset."""
        return [{k: v for k, v in kw.items() if v is not None} for r, kw in self.calls if r == route]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    monkeypatch.setattr(Client, "_request", lambda self, route, **kw: fake(route, **kw))
    monkeypatch.setenv("COLUMNS", "300")  # wide enough that no header wraps
    yield fake


def header(table: str) -> list[str]:
    line = next(x for x in table.splitlines() if "┃" in x)
    return [c for c in re.split(r"[\s┃│]+", line) if c]


# -- parsing -----------------------------------------------------------------------------------------


def test_sort_keys() -> None:
    assert sort_key(None) is None
    assert sort_key("f1") == "f1"
    assert sort_key("-f1") == "-f1"
    assert sort_key("f1", desc=True) == "-f1"
    assert sort_key("-f1", desc=True) == "-f1"
    with pytest.raises(InvalidInput, match="descending order needs a metric"):
        sort_key(None, desc=True)
    with pytest.raises(InvalidInput, match="give a metric name"):
        sort_key("-")


def test_usage_errors() -> None:
    assert "give 2 to 10 run ids, not 1" in usage_error("run", "compare", "p", RUN_A)
    assert "give 2 to 10 run ids, not 11" in usage_error("run", "compare", "p", *([RUN_A] * 11))
    assert "--desc needs --sort METRIC" in usage_error("experiment", "runs", "p", "churn", "--desc")
    assert "'-' is not a metric name" in usage_error("experiment", "runs", "p", "churn", "--sort", "-")
    assert "invalid value for 'version'" in usage_error("model", "promote", "p", "churn", "two").lower()
    assert "invalid value for 'version'" in usage_error("model", "lineage", "p", "churn", "0").lower()
    assert "missing argument 'name'" in usage_error("model", "rollback", "p").lower()


# -- what the SDK sends and what the CLI prints --------------------------------------------------------


def test_experiment_list(api: FakeApi) -> None:
    api.answers["experiments.list"] = [experiment(), experiment(name="ltv", id="4", runs=0, last_run_at=None)]
    listed = json.loads(ok("experiment", "list", "p", "--json").stdout)
    assert [e["name"] for e in listed] == ["churn", "ltv"]
    assert all(set(e) == set(ExperimentPublic.model_fields) for e in listed)
    table = ok("experiment", "list", "p").stdout
    assert header(table) == ["name", "runs", "last_run_at", "created_at", "id"]
    assert re.search(r"ltv .* 0 .* - ", table)


def test_experiment_runs_sorts_by_a_metric(api: FakeApi) -> None:
    api.answers["experiments.runs"] = [mlflow_run(), mlflow_run(RUN_B, name="gb-0", metrics={"f1": 0.7, "loss": 1})]
    ok("experiment", "runs", "p", "churn", "--sort", "-f1", "-n", "5")
    ok("experiment", "runs", "p", "churn", "--sort", "f1", "--desc")
    ok("experiment", "runs", "p", "churn", "--sort", "f1")
    ok("experiment", "runs", "p", "churn")
    sent = api.sent("experiments.runs")
    assert [kw["params"] for kw in sent] == [
        {"limit": 5, "sort": "-f1"},
        {"limit": 50, "sort": "-f1"},
        {"limit": 50, "sort": "f1"},
        {"limit": 50},
    ]
    assert sent[0]["name"] == "churn" and sent[0]["project"] == "p"

    table = ok("experiment", "runs", "p", "churn", "--sort", "loss").stdout
    # The sort key is the first metric column, then the others by name.
    assert header(table) == [
        "id",
        "name",
        "status",
        "start",
        "duration",
        "loss",
        "accuracy",
        "f1",
        "params",
        "datasets",
        "registered",
    ]
    assert RUN_A in table and "0.8123" in table and "12.5s" in table
    assert "customers@3" in table and "churn v2" in table and "model=rf" in table

    listed = json.loads(ok("experiment", "runs", "p", "churn", "--json").stdout)
    assert all(set(r) == set(ExperimentRun.model_fields) for r in listed)
    assert listed[0]["metrics"] == {"f1": 0.812345, "accuracy": 0.9}


def test_run_compare(api: FakeApi) -> None:
    a = mlflow_run(params={"model": "rf", "depth": "4"})
    b = mlflow_run(RUN_B, name="gb-0", params={"model": "gb"}, metrics={"f1": 0.7}, datasets=[])
    api.answers["experiments.compare"] = {
        "runs": [a, b],
        "params": ["depth", "model"],
        "metrics": ["accuracy", "f1"],
        "differing_params": ["depth", "model"],
    }
    r = ok("run", "compare", "p", RUN_A, RUN_B)
    assert api.sent("experiments.compare")[0]["json"] == {"run_ids": [RUN_A, RUN_B]}
    assert header(r.stdout) == [RUN_A[:8], RUN_B[:8]]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in r.stdout.splitlines()
            if line.startswith("│")}  # fmt: skip
    assert rows["params.model *"] == ["rf", "gb"]
    assert rows["params.depth *"] == ["4", "-"]
    assert rows["metrics.f1"] == ["0.8123", "0.7"]
    assert rows["metrics.accuracy"] == ["0.9", "-"]
    assert rows["datasets"] == ["customers@3", ""]
    assert r.stdout.rstrip().endswith("* differs between the runs")

    shown = json.loads(ok("run", "compare", "p", RUN_A, RUN_B, "--json").stdout)
    assert set(shown) == set(RunComparison.model_fields)


def test_run_list_still_lists_flow_runs(api: FakeApi) -> None:
    api.answers["runs.list"] = []
    assert ok("run", "list", "p").stdout == "(none)\n"
    assert api.sent("runs.list") == [{"params": {"limit": 50}, "project": "p"}]


def test_model_list_and_show(api: FakeApi) -> None:
    api.answers["models.list"] = [model(), model(name="ltv", aliases={}, champion=None, challenger=None)]
    table = ok("model", "list", "p").stdout
    assert header(table) == ["name", "champion", "challenger", "latest_version", "updated_at", "description"]
    assert re.search(r"churn .* 2 .* 3 .* 3 ", table)

    api.answers["models.get"] = {
        **model(),
        "versions": [version(3, aliases=["challenger"]), version(2)],
        "promotions": [promotion("promote", 2, None)],
    }
    shown = ok("model", "show", "p", "churn", "--versions", "2").stdout
    assert api.sent("models.get")[0]["params"] == {"versions": 2}
    assert re.search(r"^champion +2$", shown, re.M) and re.search(r"^aliases +champion=2, challenger=3$", shown, re.M)
    assert "versions:" in shown and "challenger" in shown and "f1=0.8123" in shown
    assert "promotions:" in shown and "better f1" in shown
    detail = json.loads(ok("model", "show", "p", "churn", "--json").stdout)
    assert set(detail) == set(ModelDetail.model_fields)


def test_model_versions(api: FakeApi) -> None:
    api.answers["models.versions"] = [version(3, aliases=[]), version(2)]
    table = ok("model", "versions", "p", "churn", "--limit", "7").stdout
    assert api.sent("models.versions")[0]["params"] == {"limit": 7}
    assert header(table) == ["version", "status", "aliases", "metric", "run_id", "experiment", "metrics", "created_at"]
    assert RUN_A in table and "champion" in table and "f1=0.8 " in table
    listed = json.loads(ok("model", "versions", "p", "churn", "--json").stdout)
    assert all(set(v) == set(ModelVersionPublic.model_fields) for v in listed)


def test_promote_and_rollback(api: FakeApi) -> None:
    api.answers["models.promote"] = promotion("promote", 3, 2)
    r = ok("model", "promote", "p", "churn", "3", "--reason", "better f1")
    assert api.sent("models.promote")[0] == {
        "json": {"version": 3, "reason": "better f1"},
        "project": "p",
        "name": "churn",
    }
    assert r.stdout == "version 3 of model churn is the champion (was version 2)\n"
    api.answers["models.promote"] = promotion("promote", 1, None)
    assert ok("model", "promote", "p", "churn", "1").stdout.endswith("(there was none)\n")
    assert api.sent("models.promote")[1]["json"] == {"version": 1, "reason": ""}

    api.answers["models.rollback"] = promotion("rollback", 2, 3, reason="regression")
    r = ok("model", "rollback", "p", "churn", "-r", "regression")
    assert api.sent("models.rollback")[0]["json"] == {"reason": "regression"}
    assert r.stdout == "rolled back model churn: version 2 is the champion again (was version 3)\n"
    shown = json.loads(ok("model", "rollback", "p", "churn", "--json").stdout)
    assert set(shown) == set(PromotionPublic.model_fields) and shown["action"] == "rollback"


def test_lineage(api: FakeApi) -> None:
    api.answers["models.lineage"] = {
        "model": "churn",
        "version": 2,
        "status": "ready",
        "aliases": ["champion"],
        "created_at": NOW.isoformat(),
        "datasets": [{"name": "customers", "version": "3", "context": "training", "digest": "ab12"}],
        "run": {
            "id": RUN_A,
            "name": "rf-0",
            "experiment": "churn",
            "status": "finished",
            "start_time": NOW.isoformat(),
            "end_time": NOW.isoformat(),
            "params": {"model": "rf"},
            "metrics": {"f1": 0.8123},
            "user": "svc.p",
        },
        "code": {
            "flow_run_id": "0b6f3c2e-5d7a-4f7e-9a51-3c1de0a4b7f2",
            "deployment": "train-churn",
            "entrypoint": "train.py:train",
            "code_sha": "ab" * 32,
            "source_name": None,
            "git_commit": None,
        },
        "deployments": [],
        "promotions": [promotion("promote", 2, None)],
    }
    shown = ok("model", "lineage", "p", "churn", "2").stdout
    assert api.sent("models.lineage")[0] == {"project": "p", "name": "churn", "version": 2}
    assert re.search(r"^model +churn version 2 \(ready; champion\)$", shown, re.M)
    assert re.search(r"^datasets +customers@3$", shown, re.M)
    assert re.search(rf"^run +{RUN_A} rf-0 in experiment churn \(finished\)$", shown, re.M)
    assert re.search(r"^deployment +train-churn \(train.py:train\)$", shown, re.M)
    assert re.search(r"^code +abababababab$", shown, re.M) and re.search(r"^deployments +-$", shown, re.M)
    assert "promotions:" in shown
    lin = json.loads(ok("model", "lineage", "p", "churn", "2", "--json").stdout)
    assert set(lin) == set(ModelLineage.model_fields) and lin["deployments"] == []


# -- the real API, models off ---------------------------------------------------------------------------


def test_models_off_is_a_clear_503(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    off = "error: models are not enabled on this platform (setting models.enabled)\n"
    for args in (
        ("experiment", "list", "churn"),
        ("experiment", "runs", "churn", "exp", "--sort", "-f1"),
        ("run", "compare", "churn", RUN_A, RUN_B),
        ("model", "list", "churn"),
        ("model", "show", "churn", "m"),
        ("model", "promote", "churn", "m", "2"),
        ("model", "rollback", "churn", "m"),
        ("model", "lineage", "churn", "m", "1"),
    ):
        r = cli.fails(*args, code=3)
        assert r.stderr == off, (args, r.output)
    r = cli.fails("model", "list", "nope")
    assert r.stderr == "error: project 'nope' not found\n"
    r = cli.fails("run", "compare", "churn", RUN_A, "not-a-run-id")
    assert "run_ids.1" in r.stderr and "should match pattern" in r.stderr
