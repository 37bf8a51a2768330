"""``selfserve deployment``, ``route``, ``predict`` and ``feedback`` against the API served by uvicorn.

No BentoML here: deployments are rows in the state the serving runtime leaves them in, as in
tests/unit/serving/test_serving_api.py. A deployment that is starting is what the gateway answers 503
for, so that path is real; an answer with predictions comes from the gateway's call to a ready
deployment, stubbed, with everything around it real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from selfserve.store.tables import Project, ServingDeployment
from tests.support import Platform, add_deployment
from tests.unit.cli.conftest import PASSWORD, Cli

ROW = {"age": 42, "income": 3.5}


def set_state(platform: Platform, project: str, name: str, state: str, last_error: str | None = None) -> None:
    with platform.store.begin() as s:
        proj_id = s.scalar(select(Project.id).where(Project.name == project))
        s.execute(
            update(ServingDeployment)
            .where(ServingDeployment.project_id == proj_id, ServingDeployment.name == name)
            .values(state=state, last_error=last_error)
        )


@pytest.fixture
def alice(cli: Cli) -> Iterator[Cli]:
    """Alice owns ``churn``, which has room for 10 deployments and runs v1 and v2 (both starting)."""
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    cli.platform.admin().quotas.set("churn", {"deployments": 10})
    add_deployment(cli.platform, "churn", "v1")
    add_deployment(cli.platform, "churn", "v2", version=2)
    yield cli


# -- routes ------------------------------------------------------------------------------------------


def test_route_lifecycle_canary_switch_history_rollback(alice: Cli) -> None:
    r = alice.ok("route", "create", "churn", "score", "--to", "v1")
    assert r.stdout.splitlines() == [
        "created route score (revision 1): v1 100%",
        "predict with `selfserve predict churn score ROWS`, or POST to /api/v1/projects/churn/routes/score/predict",
    ]
    r = alice.ok("route", "set", "churn", "score", "--to", "v1=90", "--to", "v2=10", "--sticky-key", "customer_id")
    assert r.stdout.strip() == "set route score (revision 2): v1 90%, v2 10%; sticky key customer_id"
    shown = alice.ok("route", "show", "churn", "score").stdout
    assert "targets       v1 90%, v2 10%" in shown and "sticky_key    customer_id" in shown
    assert "predict_path  /api/v1/projects/churn/routes/score/predict" in shown

    r = alice.ok("route", "switch", "churn", "score", "--to", "v2", "--reason", "v2 wins")
    assert r.stdout.strip() == "switched route score (revision 3): v2 100%; sticky key customer_id"
    r = alice.ok("route", "rollback", "churn", "score", "-r", "too soon")
    assert r.stdout.strip() == "rolled back route score (revision 4): v1 90%, v2 10%; sticky key customer_id"

    history = alice.json("route", "history", "churn", "score")
    assert [(h["revision"], h["action"], h["spec"]["targets"]) for h in history] == [
        (4, "rollback", {"v1": 90, "v2": 10}),
        (3, "switch", {"v2": 100}),
        (2, "set", {"v1": 90, "v2": 10}),
        (1, "create", {"v1": 100}),
    ]
    assert (history[0]["reason"], history[0]["actor"]) == ("too soon", "alice")
    table = alice.ok("route", "history", "churn", "score").stdout
    assert "v2 wins" in table and "rollback" in table and "v2 100%" in table and "customer_id" in table

    listed = alice.json("route", "list", "churn")
    assert [(x["name"], x["revision"], x["spec"]["sticky_key"]) for x in listed] == [("score", 4, "customer_id")]
    assert "v1 90%, v2 10%" in alice.ok("route", "list", "churn").stdout

    # A shadow and a feature view are part of the spec; `set` replaces the spec as a whole.
    shadowed = alice.json("route", "set", "churn", "score", "--to", "v1", "--shadow", "v2")
    assert shadowed["spec"] == {"targets": {"v1": 100}, "sticky_key": None, "shadow": "v2", "feature_view": None}
    r = alice.fails("route", "set", "churn", "score", "--to", "v1", "--feature-view", "customers")
    assert "no feature view 'customers'" in r.stderr

    r = alice.fails("route", "delete", "churn", "score")
    assert "pass --yes to confirm" in r.stderr
    assert alice.ok("route", "delete", "churn", "score", "--yes").stdout.strip() == "deleted route score"
    assert alice.ok("route", "list", "churn").stdout.strip() == "(none)"


def test_bad_targets_are_refused_with_clear_messages(alice: Cli) -> None:
    # Weights that do not add up are the platform's refusal (invalid input): exit 1.
    r = alice.fails("route", "create", "churn", "score", "--to", "v1=90", "--to", "v2=20")
    assert "must add up to 100, not 110" in r.stderr
    r = alice.fails("route", "create", "churn", "score", "--to", "nope")
    assert "no deployment 'nope'" in r.stderr
    r = alice.fails("route", "create", "churn", "score", "--to", "v1", "--shadow", "v1")
    assert "is also a target" in r.stderr
    # A --to that is not DEPLOYMENT=PERCENT is a usage error, refused before anything is sent: exit 2.
    r = alice.fails("route", "create", "churn", "score", "--to", "v1=x", code=2)
    assert "invalid weight in 'v1=x'" in r.stderr
    r = alice.fails("route", "create", "churn", "score", "--to", "v1", "--to", "v2", code=2)
    assert "invalid target 'v1'" in r.stderr
    r = alice.fails("route", "create", "churn", "score", "--to", "v1=50", "--to", "v1=50", code=2)
    assert "given twice" in r.stderr
    alice.fails("route", "create", "churn", "score", code=2)
    assert alice.ok("route", "list", "churn").stdout.strip() == "(none)", "nothing refused was created"

    for args in (
        ("show", "churn", "nope"),
        ("set", "churn", "nope", "--to", "v1"),
        ("switch", "churn", "nope", "--to", "v1"),
        ("rollback", "churn", "nope"),
        ("history", "churn", "nope"),
        ("stats", "churn", "nope"),
        ("delete", "churn", "nope", "--yes"),
    ):
        r = alice.fails("route", *args)
        assert "route 'nope' not found" in r.stderr, args
    r = alice.fails("route", "list", "elsewhere")
    assert "project 'elsewhere' not found" in r.stderr

    alice.ok("route", "create", "churn", "score", "--to", "v1")
    r = alice.fails("route", "rollback", "churn", "score")
    assert "nothing to roll back to" in r.stderr
    r = alice.fails("route", "create", "churn", "score", "--to", "v2")
    assert "already exists" in r.stderr


# -- deployments -------------------------------------------------------------------------------------


def test_deployment_list_show_logs_delete(alice: Cli) -> None:
    set_state(alice.platform, "churn", "v2", "failed", last_error="model file is not skops")
    alice.ok("route", "create", "churn", "score", "--to", "v1")

    table = alice.ok("deployment", "list", "churn").stdout
    assert "v1" in table and "starting" in table and "failed" in table and "clf@2" in table
    listed = alice.json("deployment", "list", "churn")
    assert [(d["name"], d["version"], d["state"], d["routes"]) for d in listed] == [
        ("v1", 1, "starting", ["score"]),
        ("v2", 2, "failed", []),
    ]
    shown = alice.ok("deployment", "show", "churn", "v2").stdout
    assert "last_error  model file is not skops" in shown
    assert "inputs      age (long), income (double)" in shown
    assert alice.json("deployment", "show", "churn", "v1")["routes"] == ["score"]

    # No serving runtime runs in this suite: the logs are unavailable, and the message says so (exit 3).
    r = alice.fails("deployment", "logs", "churn", "v1", code=3)
    assert "the serving runtime is not answering" in r.stderr
    alice.fails("deployment", "logs", "churn", "v1", "--tail", "0", code=2)

    r = alice.fails("deployment", "delete", "churn", "v1")
    assert "in use by route(s) score" in r.stderr
    assert alice.ok("deployment", "delete", "churn", "v2").stdout.strip() == "deleted deployment v2"
    assert [d["name"] for d in alice.json("deployment", "list", "churn")] == ["v1"]
    for args in (("show", "churn", "v2"), ("logs", "churn", "v2"), ("delete", "churn", "v2")):
        r = alice.fails("deployment", *args)
        assert "deployment 'v2' not found" in r.stderr, args


def test_deployment_create_refusals(alice: Cli) -> None:
    # The real service: without a model registry, creating is refused as unavailable (exit 3).
    r = alice.fails("deployment", "create", "churn", "clf-v7", "--model", "clf@champion", code=3)
    assert "models are not enabled" in r.stderr
    r = alice.fails("deployment", "create", "churn", "v1", "--model", "clf@champion")
    assert "deployment 'v1' already exists" in r.stderr
    r = alice.fails("deployment", "create", "churn", "clf-v7", "--model", "Clf@@7")
    assert "invalid model reference" in r.stderr
    alice.fails("deployment", "create", "churn", "clf-v7", code=2)


# -- predict and feedback ----------------------------------------------------------------------------


def test_predict_answers_503_while_the_deployment_is_starting(alice: Cli, tmp_path: Path) -> None:
    alice.ok("route", "create", "churn", "score", "--to", "v1")
    expected = "error: deployment 'v1' of route 'score' did not answer: it is starting"
    # As the issue writes it: --json (the answer as JSON) and the rows as JSON.
    r = alice.fails("predict", "churn", "score", "--json", json.dumps({"rows": [ROW]}), code=3)
    assert r.stderr.strip() == expected and r.stdout == ""
    r = alice.fails("predict", "churn", "score", json.dumps(ROW), code=3)
    assert r.stderr.strip() == expected
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"rows": [ROW, ROW]}))
    assert alice.fails("predict", "churn", "score", "--file", str(rows), code=3).stderr.strip() == expected
    assert alice.fails("predict", "churn", "score", "-f", "-", input=json.dumps([ROW]), code=3).stderr.strip() == (
        expected
    )
    stats = alice.json("route", "stats", "churn", "score")
    assert [(t["target"], t["requests"], t["errors"]) for t in stats["targets"]] == [("v1", 4, 4)]


def test_bad_predict_input(alice: Cli, tmp_path: Path) -> None:
    alice.ok("route", "create", "churn", "score", "--to", "v1")
    r = alice.fails("predict", "churn", "score", "{not json", code=2)
    assert "ROWS is not JSON" in r.stderr
    r = alice.fails("predict", "churn", "score", "[1, 2]", code=2)
    assert "a list of rows, or one row" in r.stderr
    r = alice.fails("predict", "churn", "score", code=2)
    assert "no rows" in r.stderr
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    r = alice.fails("predict", "churn", "score", "{}", "--file", str(rows), code=2)
    assert "not both" in r.stderr
    r = alice.fails("predict", "churn", "score", "--file", str(tmp_path / "missing.json"), code=2)
    assert "cannot read" in r.stderr
    # What the route's deployment does not take is the platform's refusal (invalid input): exit 1.
    r = alice.fails("predict", "churn", "score", '{"age": 1, "income": "lots"}')
    assert r"rows[0].income: expected a number" in r.stderr
    r = alice.fails("predict", "churn", "score", "--file", str(rows))
    assert "rows" in r.stderr
    r = alice.fails("predict", "churn", "nope", json.dumps(ROW))
    assert "route 'nope' not found" in r.stderr


def test_feedback_labels_predictions(alice: Cli) -> None:
    alice.ok("route", "create", "churn", "score", "--to", "v1")
    r = alice.ok("feedback", "churn", "score", "--request-id", "abc123", "--label", "1")
    assert r.stdout.strip() == (
        "accepted 1 label for route score: written to dataset feedback-score with the prediction log's next flush"
    )
    result = alice.json(
        "feedback",
        "churn",
        "score",
        "--request-id",
        "def456",
        "--label",
        "yes",
        "--request-id",
        "ghi789",
        "--label",
        "true",
        "--request-id",
        "jkl012",
        "--label",
        '"0"',
    )
    assert result == {"accepted": 3, "dataset": "feedback-score"}
    alice.platform.app.state.gateway.predlog.flush()
    c = alice.platform.client()
    c.login("alice", PASSWORD, save=False)
    labels = c.datasets.query("churn", "SELECT request_id, label FROM feedback_score ORDER BY request_id")
    assert labels.rows == [["abc123", "1"], ["def456", '"yes"'], ["ghi789", "true"], ["jkl012", '"0"']]

    r = alice.fails("feedback", "churn", "score", "--request-id", "a", "--request-id", "b", "--label", "1", code=2)
    assert "give one label each" in r.stderr
    r = alice.fails("feedback", "churn", "score", "--request-id", "a", "--label", "[1]", code=2)
    assert "is not a number, true/false, null or a string" in r.stderr
    r = alice.fails(
        "feedback", "churn", "score", "--request-id", "a", "--label", "1", "--request-id", "a", "--label", "0", code=2
    )
    assert "may be given once" in r.stderr
    r = alice.fails("feedback", "churn", "score", "--request-id", "not an id!", "--label", "1")
    assert "request_id" in r.stderr
    r = alice.fails("feedback", "churn", "nope", "--request-id", "abc123", "--label", "1")
    assert "route 'nope' not found" in r.stderr
