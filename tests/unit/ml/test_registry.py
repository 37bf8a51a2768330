"""The registry service without an MLflow server: what real servers rarely show on demand.

A version that is not ready, MLflow down in the middle of a promotion, a project whose workspace
is not provisioned yet, the code a flow run deployed, and how a run's tags and inputs become
dataset versions. The in-process API answers through the SDK; MLflow is an ``httpx.MockTransport``
that answers the few registry paths these tests need the way MLflow 3.17 does
(``tests/integration/ml/test_registry.py`` runs the same service against a real server).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.ml import registry
from selfserve.ml.mlflow import WORKSPACE_HEADER, MLflowAdmin
from selfserve.ml.registry import Registry
from selfserve.store.tables import AuditEvent, FlowDeployment, ModelPromotion, PipelineRun, Project
from tests.support import Platform

RUN = "c0ffee" + "0" * 26
FLOW_RUN = str(uuid.uuid4())


@dataclass
class FakeRegistry:
    """Just enough of MLflow's tracking and registry REST API, per workspace."""

    workspaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False

    def add(self, workspace: str) -> dict[str, Any]:
        ws: dict[str, Any] = {"models": {}, "runs": {}, "experiments": {}}
        self.workspaces[workspace] = ws
        return ws

    def admin(self) -> MLflowAdmin:
        return MLflowAdmin("http://mlflow.test", "pw", transport=httpx.MockTransport(self.handle))

    @staticmethod
    def _missing(what: str) -> httpx.Response:
        return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{what} not found"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        ws = self.workspaces.get(request.headers.get(WORKSPACE_HEADER, ""))
        if ws is None:
            return self._missing("Workspace")
        q = dict(request.url.params)
        body = json.loads(request.content) if request.content else {}
        path = request.url.path.removeprefix("/api/2.0/mlflow/")
        if path == "experiments/search":
            return httpx.Response(200, json={"experiments": list(ws["experiments"].values())})
        if path == "runs/get":
            run = ws["runs"].get(q["run_id"])
            return httpx.Response(200, json={"run": run}) if run else self._missing("Run")
        if path == "registered-models/get":
            model = ws["models"].get(q["name"])
            return httpx.Response(200, json={"registered_model": model["rm"]}) if model else self._missing("Model")
        if path == "model-versions/get":
            model = ws["models"].get(q["name"])
            mv = model and model["versions"].get(q["version"])
            return httpx.Response(200, json={"model_version": mv}) if mv else self._missing("Model Version")
        if path == "registered-models/alias" and request.method == "POST":
            aliases = ws["models"][body["name"]]["rm"]["aliases"]
            aliases[:] = [a for a in aliases if a["alias"] != body["alias"]]
            aliases.append({"alias": body["alias"], "version": body["version"]})
            return httpx.Response(200, json={})
        if path == "model-versions/search":
            return httpx.Response(200, json={})
        return httpx.Response(404, text="no such endpoint")


def run_json(**tags: str) -> dict[str, Any]:
    return {
        "info": {"run_id": RUN, "experiment_id": "7", "run_name": "rf", "status": "FINISHED", "start_time": 1000},
        "data": {
            "metrics": [
                {"key": "f1", "value": 0.8},
                {"key": "odd", "value": "not a number"},
                {"key": "auc", "value": "NaN"},
                {"key": "loss", "value": "Infinity"},
            ],
            "params": [{"key": "depth", "value": "4"}],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "inputs": {
            "dataset_inputs": [
                {
                    "tags": [{"key": "mlflow.data.context", "value": "training"}],
                    "dataset": {"name": "customers@3", "digest": "ab12"},
                },
                {"tags": [], "dataset": {"name": "holidays", "digest": "cd34"}},
            ]
        },
    }


def model(project: str, name: str, statuses: dict[int, str], champion: int | None = None) -> dict[str, Any]:
    full = f"{project}.{name}"
    aliases = [{"alias": "champion", "version": str(champion)}] if champion else []
    versions = {
        str(v): {"name": full, "version": str(v), "status": s, "run_id": RUN, "creation_timestamp": 1000}
        for v, s in statuses.items()
    }
    return {"rm": {"name": full, "aliases": aliases, "latest_versions": list(versions.values())}, "versions": versions}


@dataclass
class World:
    platform: Platform
    fake: FakeRegistry
    project: str
    owner: Any


@pytest.fixture
def world(sqlite_platform: Platform) -> World:
    settings = sqlite_platform.settings
    on = settings.model_copy(update={"models": settings.models.model_copy(update={"enabled": True})})
    fake = FakeRegistry()
    sqlite_platform.app.state.registry = Registry(on, fake.admin())
    owner = sqlite_platform.user("alice")
    owner.projects.create("churn")
    return World(sqlite_platform, fake, "churn", owner)


def test_a_version_that_is_not_ready_cannot_become_champion(world: World) -> None:
    ws = world.fake.add("churn")
    ws["models"]["churn.m"] = model("churn", "m", {1: "READY", 2: "PENDING_REGISTRATION", 3: "FAILED_REGISTRATION"})
    for version, status in ((2, "pending_registration"), (3, "failed_registration")):
        with pytest.raises(Conflict, match=f"version {version} of model 'm' is {status}, not ready"):
            world.owner.models.promote("churn", "m", version)
    assert world.owner.models.promote("churn", "m", 1, reason="first").previous_version is None


def test_mlflow_down_is_a_503_and_leaves_no_promotion(world: World) -> None:
    ws = world.fake.add("churn")
    ws["models"]["churn.m"] = model("churn", "m", {1: "READY"})
    world.fake.down = True
    for call in (
        lambda: world.owner.experiments.list("churn"),
        lambda: world.owner.models.list("churn"),
        lambda: world.owner.models.promote("churn", "m", 1),
        lambda: world.owner.models.lineage("churn", "m", 1),
    ):
        with pytest.raises(ServiceUnavailable, match="model registry is not reachable"):
            call()
    with world.platform.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelPromotion)) == 0
        refused = s.scalars(select(AuditEvent).where(AuditEvent.action == "model:promote")).all()
    assert [e.outcome for e in refused] == ["error:service_unavailable"]


def test_a_project_without_a_workspace_yet_has_nothing(world: World) -> None:
    assert world.owner.experiments.list("churn") == []
    assert world.owner.models.list("churn") == []
    with pytest.raises(NotFound, match="experiment 'x' not found in project 'churn'"):
        world.owner.experiments.runs("churn", "x")


def test_lineage_names_the_deployed_code_of_the_flow_run(world: World) -> None:
    ws = world.fake.add("churn")
    ws["models"]["churn.m"] = model("churn", "m", {1: "READY"})
    ws["experiments"]["7"] = {"experiment_id": "7", "name": "churn/m"}
    ws["runs"][RUN] = run_json(
        **{"selfserve.dataset": "customers", "selfserve.dataset_version": "3", "selfserve.flow_run_id": FLOW_RUN}
    )
    with world.platform.store.begin() as s:
        proj = s.scalar(select(Project).where(Project.name == "churn"))
        assert proj is not None
        dep = FlowDeployment(
            project_id=proj.id,
            name="train-m",
            kind="builtin",
            flow_name="selfserve-train",
            entrypoint="train.py:train",
            code_sha="cd" * 32,
            parameters={},
            created_by="alice",
        )
        s.add(dep)
        s.flush()
        s.add(PipelineRun(flow_run_id=FLOW_RUN, project_id=proj.id, deployment_id=dep.id))
    lin = world.owner.models.lineage("churn", "m", 1)
    assert lin.code is not None
    assert (lin.code.flow_run_id, lin.code.deployment, lin.code.entrypoint) == (FLOW_RUN, "train-m", "train.py:train")
    assert lin.code.code_sha == "cd" * 32
    assert [(d.name, d.version, d.context, d.digest) for d in lin.datasets] == [
        ("customers", "3", "training", "ab12"),
        ("holidays", None, None, "cd34"),
    ]
    assert lin.run is not None and lin.run.experiment == "m"
    assert lin.run.metrics == {"f1": 0.8} and lin.run.params == {"depth": "4"}
    assert lin.deployments == [] and lin.promotions == []


def test_datasets_from_tags_and_inputs() -> None:
    run = run_json(**{"selfserve.datasets": "a@1, b@2,c", "selfserve.dataset": "a", "selfserve.dataset_version": "1"})
    refs = registry._datasets(run)
    assert [(d.name, d.version) for d in refs] == [
        ("a", "1"),
        ("b", "2"),
        ("c", None),
        ("customers", "3"),
        ("holidays", None),
    ]


@pytest.mark.parametrize(
    ("sort", "parsed"),
    [(None, None), ("f1", ("f1", False)), ("-f1", ("f1", True)), ("val f1", ("val f1", False))],
)
def test_sort_keys_parse(sort: str | None, parsed: tuple[str, bool] | None) -> None:
    assert registry.parse_sort(sort) == parsed


@pytest.mark.parametrize("sort", ["-", "", "a`b", "a\nb", "x" * 251])
def test_bad_sort_keys_are_refused(sort: str) -> None:
    with pytest.raises(InvalidInput, match="invalid sort"):
        registry.parse_sort(sort)
