"""Experiments and models through the platform, against the real MLflow server of the session stack.

The content is made once per module the way users make it: the plain ``mlflow`` client with each
owner's own credentials (``client.mlflow.env``) in their project's workspace, one tiny sklearn model
logged for real and its URI registered as the versions of two models. The platform then reads and
promotes as MLflow's admin; each test reads the content or works on a model no other test touches.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from selfserve import Client, Conflict, InvalidInput, NotFound, PermissionDenied
from tests.pipeline_stack import Stack
from tests.support import mlflow_env

pytestmark = pytest.mark.integration

FLOW_RUN = "5b7e0d3c-2f1a-4c6e-9d8b-7a6f5e4d3c2b"
RUNS = [  # (name, params, metrics) of project A's experiment "churn"
    ("rf-0", {"model": "rf", "depth": "4"}, {"f1": 0.71, "accuracy": 0.80}),
    ("rf-1", {"model": "rf", "depth": "8"}, {"f1": 0.83, "accuracy": 0.86}),
    ("gb-0", {"model": "gb"}, {"f1": 0.77, "loss": 0.41}),
]


@dataclass
class World:
    stack: Stack
    a: str  # alice owns it; vera is its viewer; bob is a scientist in it
    b: str  # bob owns it
    alice: Client
    bob: Client
    vera: Client
    runs: dict[str, str] = field(default_factory=dict)  # run name -> id in A
    b_run: str = ""
    seconds: float = 0.0


@contextlib.contextmanager
def mlflow_as(client: Client, project: str) -> Iterator[Any]:
    """The plain ``mlflow`` client, as ``client``'s own MLflow account in ``project``'s workspace."""
    import mlflow

    with mlflow_env(client, project) as env:
        yield mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


def _log_runs(ml: Any, experiment: str, runs: list[tuple[str, dict[str, str], dict[str, float]]]) -> list[str]:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    exp_id = ml.create_experiment(experiment)
    ids = []
    now = int(time.time() * 1000)
    tags = {"selfserve.dataset": "customers", "selfserve.dataset_version": "3", "selfserve.flow_run_id": FLOW_RUN}
    for name, params, metrics in runs:
        run = ml.create_run(exp_id, run_name=name)
        ml.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        ds = Dataset(name="customers@3", digest="d1g3st", source_type="code", source="{}")
        ml.log_inputs(run.info.run_id, datasets=[DatasetInput(ds, [InputTag("mlflow.data.context", "training")])])
        ml.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def _tiny_model(run_id: str) -> tuple[str, str]:
    """One real sklearn model logged in ``run_id`` (requirements given: no inference subprocess): its URI and id."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    model = LogisticRegression().fit(x, [0, 1, 0, 1])
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], serialization_format="cloudpickle"
        )
    return str(info.model_uri), str(info.model_id)


def _register(ml: Any, name: str, run_ids: list[str], source: Callable[[str], dict[str, str]]) -> None:
    """Versions 1, 2, ... of ``name``, one per run (``source`` gives each its source and model id)."""
    ml.create_registered_model(name)
    for run_id in run_ids:
        ml.create_model_version(name, run_id=run_id, await_creation_for=0, **source(run_id))


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    try:
        yield _make_world(stack)
    finally:
        stack.close_clients()


def _make_world(stack: Stack) -> World:
    started = time.perf_counter()
    admin = stack.admin()
    alice, bob, vera = stack.user("alice-ml", admin), stack.user("bob-ml", admin), stack.user("vera-ml", admin)
    a, b = stack.project(alice, "ml-a"), stack.project(bob, "ml-b")
    alice.members.add(a, "vera-ml", role="viewer")
    alice.members.add(a, "bob-ml", role="scientist")
    w = World(stack, a, b, alice, bob, vera)
    # MLflow's own notices (type hints, pickle formats) are not what this module tests.
    with warnings.catch_warnings(), mlflow_as(alice, a) as ml:
        warnings.simplefilter("ignore")
        ids = _log_runs(ml, f"{a}/churn", RUNS)
        w.runs = dict(zip([r[0] for r in RUNS], ids, strict=True))
        uri, model_id = _tiny_model(ids[0])
        logged = {"source": uri, "model_id": model_id}  # every version is the one real model
        _register(ml, f"{a}.churn", ids, lambda _: logged)  # read by the tests; never promoted
        ml.set_registered_model_alias(f"{a}.churn", "challenger", "3")
        _register(ml, f"{a}.ltv", ids, lambda _: logged)  # promoted and rolled back by one test only
        ml.set_registered_model_alias(f"{a}.ltv", "challenger", "3")
    with warnings.catch_warnings(), mlflow_as(bob, b) as ml:
        warnings.simplefilter("ignore")
        (w.b_run,) = _log_runs(ml, f"{b}/fraud", [("b-0", {"model": "rf"}, {"f1": 0.5})])
        _register(ml, f"{b}.fraud", [w.b_run], lambda run_id: {"source": f"runs:/{run_id}/model"})
    w.seconds = time.perf_counter() - started
    return w


def test_experiments_and_their_runs(world: World) -> None:
    a, alice = world.a, world.alice
    (exp,) = alice.experiments.list(a)
    assert (exp.name, exp.mlflow_name, exp.runs) == ("churn", f"{a}/churn", 3)
    assert exp.last_run_at is not None

    newest = alice.experiments.runs(a, "churn")
    assert [r.name for r in newest] == ["gb-0", "rf-1", "rf-0"]
    best = alice.experiments.runs(a, "churn", sort="f1", desc=True)
    assert [(r.name, r.metrics["f1"]) for r in best] == [("rf-1", 0.83), ("gb-0", 0.77), ("rf-0", 0.71)]
    assert [r.name for r in alice.experiments.runs(a, "churn", sort="f1")] == ["rf-0", "gb-0", "rf-1"]
    assert [r.name for r in alice.experiments.runs(a, "churn", sort="-f1", limit=1)] == ["rf-1"]
    # Runs without the metric come last, whichever the order.
    assert [r.name for r in alice.experiments.runs(a, "churn", sort="-loss")][0] == "gb-0"

    top = best[0]
    assert top.params == {"model": "rf", "depth": "8"} and top.status == "finished" and top.experiment == "churn"
    assert [(d.name, d.version, d.context) for d in top.datasets] == [("customers", "3", "training")]
    assert {(v.model, v.version) for v in top.model_versions} == {("churn", 2), ("ltv", 2)}
    assert top.flow_run_id == FLOW_RUN and top.duration_seconds is not None
    # The experiment is found by its id too, and the viewer reads it.
    assert len(world.vera.experiments.runs(a, exp.id)) == 3

    with pytest.raises(InvalidInput, match="no run of experiment 'churn' has the metric 'auc'; its metrics: accuracy"):
        alice.experiments.runs(a, "churn", sort="auc")
    with pytest.raises(NotFound, match=f"experiment 'nope' not found in project '{a}'"):
        alice.experiments.runs(a, "nope")


def test_runs_compare_side_by_side(world: World) -> None:
    a, alice, ids = world.a, world.alice, world.runs
    cmp = alice.experiments.compare(a, [ids["rf-0"], ids["gb-0"]])
    assert [r.name for r in cmp.runs] == ["rf-0", "gb-0"]
    assert cmp.params == ["depth", "model"] and cmp.differing_params == ["depth", "model"]
    assert cmp.metrics == ["accuracy", "f1", "loss"]

    with pytest.raises(InvalidInput, match="run_ids: List should have at least 2 items"):
        alice.experiments.compare(a, [ids["rf-0"]])
    with pytest.raises(InvalidInput, match="given more than once"):
        alice.experiments.compare(a, [ids["rf-0"], ids["rf-0"]])
    with pytest.raises(InvalidInput, match="run_ids.1"):
        alice.experiments.compare(a, [ids["rf-0"], "../etc"])


def test_another_projects_runs_and_models_are_not_found(world: World) -> None:
    """Bob belongs to both projects: even so, project A never shows what lives in project B."""
    a, b, bob = world.a, world.b, world.bob
    with pytest.raises(NotFound, match=f"run '{world.b_run}' not found in project '{a}'"):
        bob.experiments.compare(a, [world.runs["rf-0"], world.b_run])
    with pytest.raises(NotFound, match=f"model 'fraud' not found in project '{a}'"):
        bob.models.get(a, "fraud")
    with pytest.raises(NotFound, match=f"model 'fraud' not found in project '{a}'"):
        bob.models.lineage(a, "fraud", 1)
    with pytest.raises(NotFound, match=f"experiment 'fraud' not found in project '{a}'"):
        bob.experiments.runs(a, "fraud")
    assert [m.name for m in bob.models.list(b)] == ["fraud"]
    assert [e.name for e in bob.experiments.list(b)] == ["fraud"]
    # Alice is no member of B: the project itself is not found.
    with pytest.raises(NotFound, match=f"project '{b}' not found"):
        world.alice.models.list(b)


def test_models_versions_and_aliases(world: World) -> None:
    a, alice = world.a, world.alice
    listed = {m.name: m for m in alice.models.list(a)}
    assert set(listed) == {"churn", "ltv"}
    churn = listed["churn"]
    assert (churn.mlflow_name, churn.challenger, churn.latest_version) == (f"{a}.churn", 3, 3)

    shown = alice.models.get(a, "churn", versions=2)
    assert [v.version for v in shown.versions] == [3, 2] and shown.promotions == []
    versions = world.vera.models.versions(a, "churn")
    assert [(v.version, v.status, v.aliases) for v in versions] == [
        (3, "ready", ["challenger"]),
        (2, "ready", []),
        (1, "ready", []),
    ]
    assert [v.run_id for v in versions] == [world.runs["gb-0"], world.runs["rf-1"], world.runs["rf-0"]]
    assert versions[1].metrics == {"f1": 0.83, "accuracy": 0.86} and versions[1].experiment == "churn"
    with pytest.raises(NotFound, match=f"model 'nope' not found in project '{a}'"):
        alice.models.versions(a, "nope")


def test_promote_and_rollback_keep_history_and_audit(world: World) -> None:
    a, alice, bob = world.a, world.alice, world.bob
    first = alice.models.promote(a, "ltv", 1, reason="first")
    assert (first.version, first.previous_version, first.action, first.actor) == (1, None, "promote", "alice-ml")
    assert bob.models.promote(a, "ltv", 2, reason="better f1").previous_version == 1  # a scientist may promote
    third = alice.models.promote(a, "ltv", 3, reason="challenger wins")
    assert third.previous_version == 2
    model = alice.models.get(a, "ltv")
    assert (model.champion, model.challenger) == (3, None)  # the challenger became champion

    with pytest.raises(Conflict, match="version 3 is already the champion of model 'ltv'"):
        alice.models.promote(a, "ltv", 3)
    with pytest.raises(Conflict, match="model 'ltv' has no version 9"):
        alice.models.promote(a, "ltv", 9)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        alice.models.promote(a, "nope", 1)

    back = alice.models.rollback(a, "ltv", reason="regression")
    assert (back.version, back.previous_version, back.action, back.reason) == (2, 3, "rollback", "regression")
    assert alice.models.rollback(a, "ltv").version == 1
    with pytest.raises(Conflict, match="model 'ltv' has no previous champion to roll back to"):
        alice.models.rollback(a, "ltv")
    with pytest.raises(Conflict, match="model 'churn' has no champion to roll back"):
        alice.models.rollback(a, "churn")

    # MLflow itself holds the champion the platform says it does.
    with mlflow_as(alice, a) as ml:
        assert ml.get_model_version_by_alias(f"{a}.ltv", "champion").version == "1"
    history = alice.models.get(a, "ltv").promotions
    assert [(p.action, p.version, p.previous_version) for p in history] == [
        ("rollback", 1, 2),
        ("rollback", 2, 3),
        ("promote", 3, 2),
        ("promote", 2, 1),
        ("promote", 1, None),
    ]
    trail = [
        (e.action, e.principal, e.outcome, (e.detail or {}).get("version"))
        for e in alice.audit.list(a)
        if e.action.startswith("model:") and e.target == "model/ltv"
    ]
    assert trail[:5] == [
        ("model:rollback", "alice-ml", "ok", 1),
        ("model:rollback", "alice-ml", "ok", 2),
        ("model:promote", "alice-ml", "ok", 3),
        ("model:promote", "bob-ml", "ok", 2),
        ("model:promote", "alice-ml", "ok", 1),
    ]


def test_a_viewer_reads_but_cannot_promote(world: World) -> None:
    a, vera = world.a, world.vera
    assert {m.name for m in vera.models.list(a)} == {"churn", "ltv"}
    with pytest.raises(PermissionDenied, match=f"role 'viewer' may not model:promote in project '{a}'"):
        vera.models.promote(a, "churn", 1, reason="sneaky")
    with pytest.raises(PermissionDenied):
        vera.models.rollback(a, "churn")
    assert world.alice.models.get(a, "churn").champion is None
    denied = [e for e in world.alice.audit.list(a) if e.principal == "vera-ml" and e.action == "model:promote"]
    assert denied and all(e.outcome == "denied:permission_denied" for e in denied)


def test_lineage_of_a_version(world: World) -> None:
    a, alice = world.a, world.alice
    lin = alice.models.lineage(a, "churn", 2)
    assert (lin.model, lin.version, lin.status, lin.aliases) == ("churn", 2, "ready", [])
    assert [(d.name, d.version, d.context, d.digest) for d in lin.datasets] == [
        ("customers", "3", "training", "d1g3st")
    ]
    assert lin.run is not None
    assert (lin.run.id, lin.run.name, lin.run.experiment) == (world.runs["rf-1"], "rf-1", "churn")
    assert lin.run.params == {"model": "rf", "depth": "8"} and lin.run.metrics == {"f1": 0.83, "accuracy": 0.86}
    assert lin.code is not None and lin.code.flow_run_id == FLOW_RUN
    assert lin.code.deployment is None  # no platform flow run has that id
    assert lin.deployments == [] and lin.promotions == []
    with pytest.raises(NotFound, match="model 'churn' has no version 7"):
        alice.models.lineage(a, "churn", 7)


def test_setup_and_reads_are_quick(world: World) -> None:
    """The module's budget: making the content plus every read here stays well under 90 s."""
    started = time.perf_counter()
    world.alice.experiments.list(world.a)
    world.alice.models.get(world.a, "churn")
    world.alice.models.lineage(world.a, "churn", 1)
    reads = time.perf_counter() - started
    print(f"content made in {world.seconds:.1f} s; three reads in {reads:.2f} s")
    assert world.seconds < 60 and reads < 10
