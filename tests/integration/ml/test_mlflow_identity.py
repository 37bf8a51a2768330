"""MLflow under platform identity, on the real stack's MLflow server (basic auth, workspaces): each member
works with the plain ``mlflow`` client as themselves, within what their project role allows, in their
projects only; removal revokes, and deleting a project deletes its workspace."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from selfserve import Client
from selfserve.ml.mlflow import MLflowAdmin
from selfserve.schemas.ml import MLflowEnv
from tests.pipeline_stack import Stack

if TYPE_CHECKING:
    from mlflow import MlflowClient

pytestmark = pytest.mark.integration

Use = Callable[..., "MlflowClient"]


@pytest.fixture
def use(pipeline_env: Stack, monkeypatch: pytest.MonkeyPatch) -> Use:
    """``use(env, workspace=None)``: a plain MLflow client working as ``env``'s user (in another workspace if given)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refusal is the answer: do not retry it
    from mlflow import MlflowClient

    def client(env: MLflowEnv, workspace: str | None = None) -> MlflowClient:
        for key, value in env.environment().items():
            monkeypatch.setenv(key, value)
        if workspace is not None:
            monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
        return MlflowClient(env.tracking_uri)

    return client


def denied(fn: Callable[..., Any], *args: Any) -> str:
    """Call ``fn(*args)``, which MLflow must refuse; return the refusal's error code."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as e:
        fn(*args)
    assert e.value.error_code == "PERMISSION_DENIED", f"{e.value.error_code}: {e.value}"
    return e.value.error_code


def people(stack: Stack, *names: str) -> Iterator[Client]:
    admin = stack.admin()
    for name in names:
        yield stack.user(f"{name}-{uuid.uuid4().hex[:6]}", admin)


def name_of(client: Client) -> str:
    return client.whoami().user.name


def log_a_run(mlflow: MlflowClient, experiment_id: str) -> str:
    run = mlflow.create_run(experiment_id)
    mlflow.log_metric(run.info.run_id, "auc", 0.91)
    mlflow.log_text(run.info.run_id, "trained on customers@3", "notes.txt")
    mlflow.set_terminated(run.info.run_id)
    return run.info.run_id


def test_a_scientist_tracks_and_registers_in_her_project_only(pipeline_env: Stack, use: Use) -> None:
    sci, other = people(pipeline_env, "sci", "other")
    admin = pipeline_env.admin()
    a = pipeline_env.project(admin, prefix="a")
    admin.members.add(a, name_of(sci), role="scientist")
    b = pipeline_env.project(other, prefix="b")

    # Her own account, in her project's workspace: experiments <project>/..., models <project>....
    mine = sci.mlflow.env(a)
    assert (mine.username, mine.workspace, mine.tracking_uri) == (name_of(sci), a, pipeline_env.mlflow_url)
    mlflow = use(mine)
    exp = mlflow.create_experiment(f"{a}/x")
    run_id = log_a_run(mlflow, exp)
    assert mlflow.get_run(run_id).data.metrics == {"auc": 0.91}
    mlflow.create_registered_model(f"{a}.m")
    version = mlflow.create_model_version(f"{a}.m", f"runs:/{run_id}/notes.txt", run_id=run_id)
    mlflow.set_registered_model_alias(f"{a}.m", "champion", version.version)
    assert mlflow.get_model_version_by_alias(f"{a}.m", "champion").run_id == run_id

    # Project B's things, made by B's owner with his own account.
    theirs = use(other.mlflow.env(b))
    b_exp = theirs.create_experiment(f"{b}/y")
    b_run = log_a_run(theirs, b_exp)
    theirs.create_registered_model(f"{b}.m")

    # With her own credentials she reaches none of it, in B's workspace or from her own.
    for workspace in (b, a):
        mlflow = use(mine, workspace=workspace)
        denied(mlflow.get_experiment, b_exp)
        denied(mlflow.get_run, b_run)
        denied(mlflow.create_run, b_exp)
        denied(mlflow.get_registered_model, f"{b}.m")
        denied(mlflow.set_registered_model_alias, f"{b}.m", "champion", "1")
    mlflow = use(mine, workspace=b)
    denied(mlflow.get_experiment_by_name, f"{b}/y")
    denied(mlflow.create_experiment, f"{b}/planted")
    assert mlflow.search_experiments() == [], "B's workspace shows her nothing"


def test_a_viewer_reads_but_cannot_write(pipeline_env: Stack, use: Use) -> None:
    owner, viewer = people(pipeline_env, "own", "view")
    a = pipeline_env.project(owner, prefix="a")
    owner.members.add(a, name_of(viewer), role="viewer")
    mlflow = use(owner.mlflow.env(a))
    exp = mlflow.create_experiment(f"{a}/x")
    run_id = log_a_run(mlflow, exp)
    mlflow.create_registered_model(f"{a}.m")
    mlflow.create_model_version(f"{a}.m", f"runs:/{run_id}/notes.txt", run_id=run_id)

    mlflow = use(viewer.mlflow.env(a))
    assert mlflow.get_experiment_by_name(f"{a}/x").experiment_id == exp
    assert mlflow.get_run(run_id).data.metrics == {"auc": 0.91}
    assert mlflow.get_registered_model(f"{a}.m").name == f"{a}.m"
    denied(mlflow.create_run, exp)
    denied(mlflow.log_metric, run_id, "auc", 1.0)
    denied(mlflow.set_registered_model_alias, f"{a}.m", "champion", "1")
    denied(mlflow.create_experiment, f"{a}/mine")


def test_removal_revokes_and_deleting_the_project_removes_its_workspace(pipeline_env: Stack, use: Use) -> None:
    (sci,) = people(pipeline_env, "sci")
    admin = pipeline_env.admin()
    a = pipeline_env.project(admin, prefix="a")
    admin.members.add(a, name_of(sci), role="scientist")
    mine = sci.mlflow.env(a)
    mlflow = use(mine)
    exp = mlflow.create_experiment(f"{a}/x")  # hers: MLflow gives its creator MANAGE on it
    run_id = log_a_run(mlflow, exp)

    admin.members.remove(a, name_of(sci))
    # Grants are read on every request; only a checked password is cached (models.auth_cache_ttl_seconds).
    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + pipeline_env.settings.models.auth_cache_ttl_seconds + 5
    while True:
        try:
            mlflow.get_experiment(exp)
        except MlflowException as e:
            assert e.error_code == "PERMISSION_DENIED", e
            break
        assert time.monotonic() < deadline, "she still reads the project's experiment after her removal"
        time.sleep(0.5)
    denied(mlflow.get_run, run_id)
    denied(mlflow.create_run, exp)
    denied(mlflow.create_experiment, f"{a}/again")

    with MLflowAdmin.from_settings(pipeline_env.settings) as mlflow_admin:
        assert mlflow_admin.get_workspace(a) is not None
        admin.projects.delete(a)
        assert mlflow_admin.get_workspace(a) is None
        assert mlflow_admin.get_user(f"svc.{a}") is None
        assert mlflow_admin.list_roles(a) == []


TRACK = """
import os
from prefect import flow, get_run_logger

@flow
def track(foreign_experiment: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    log = get_run_logger()
    client = MlflowClient()
    project = os.environ["SELFSERVE_PROJECT"]
    exp = client.create_experiment(f"{project}/from-a-run")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "rows", 42.0)
    client.set_terminated(run.info.run_id)
    log.info("as=%s workspace=%s", os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_WORKSPACE"])
    try:
        client.get_experiment(foreign_experiment)
        log.info("foreign=read")
    except MlflowException as e:
        log.info("foreign=%s", e.error_code)
"""


def test_a_run_works_as_its_project_s_service_account(pipeline_env: Stack, use: Use, flow_dir: Path) -> None:
    owner, other = people(pipeline_env, "own", "other")
    a = pipeline_env.project(owner, prefix="a")
    b = pipeline_env.project(other, prefix="b")
    foreign = use(other.mlflow.env(b)).create_experiment(f"{b}/secret")
    (flow_dir / "track.py").write_text(TRACK)
    owner.flows.deploy(a, flow_dir / "track.py", "track", name="track")
    run = owner.flows.run(a, "track", parameters={"foreign_experiment": foreign})
    done = owner.runs.wait(a, run.id, timeout=120)
    expected = {f"as=svc.{a} workspace={a}", "foreign=PERMISSION_DENIED"}
    # The engine ships its logs in batches: the last ones may reach the API just after the final state.
    deadline = time.monotonic() + 20
    while True:
        lines = [line.message for line in owner.runs.logs(a, run.id).lines]
        if expected <= set(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done.state == "completed", (done, lines)
    assert expected <= set(lines), lines
    mlflow = use(owner.mlflow.env(a))
    (logged,) = mlflow.search_runs([mlflow.get_experiment_by_name(f"{a}/from-a-run").experiment_id])
    assert logged.data.metrics == {"rows": 42.0}
