"""API models of experiments and the model registry: runs, comparisons, versions, promotions, lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from selfserve.schemas import Model, Text

RUN_ID_PATTERN = r"^[0-9a-f]{32}$"
RunId = Annotated[
    str, StringConstraints(pattern=RUN_ID_PATTERN), Field(description="An MLflow run id (32 hex digits).")
]
PromotionAction = Literal["promote", "rollback"]


class ExperimentPublic(Model):
    name: str = Field(description="The experiment's name in the project (its MLflow name without '<project>/').")
    mlflow_name: str = Field(description="The experiment's name in MLflow.")
    id: str
    runs: int = Field(description="Runs in the experiment (deleted runs not counted).")
    last_run_at: datetime | None = Field(description="When its newest run started.")
    created_at: datetime | None


class DatasetRef(Model):
    """A dataset version a run read: from the run's ``selfserve.dataset*`` tags or its logged inputs."""

    name: str
    version: str | None = None
    context: str | None = Field(
        default=None, description="How the run used it (training, validation, ...), when logged."
    )
    digest: str | None = Field(default=None, description="MLflow's digest of the logged input, when logged.")


class ModelVersionRef(Model):
    model: str
    version: int


class ExperimentRun(Model):
    id: str
    name: str
    experiment: str
    status: str = Field(description="running, scheduled, finished, failed or killed.")
    start_time: datetime | None
    end_time: datetime | None
    duration_seconds: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    datasets: list[DatasetRef] = Field(description="Dataset versions the run read.")
    model_versions: list[ModelVersionRef] = Field(description="Registered model versions made from the run.")
    parent_id: str | None = Field(default=None, description="The run it is nested in (a training's candidates are).")
    flow_run_id: str | None = Field(default=None, description="The platform flow run that ran it, when a flow did.")
    user: str | None = None


class CompareRequest(Model):
    run_ids: list[RunId] = Field(min_length=2, max_length=10, description="2 to 10 run ids of the project.")


class RunComparison(Model):
    runs: list[ExperimentRun]
    params: list[str] = Field(description="Every parameter any of the runs has, sorted.")
    metrics: list[str] = Field(description="Every metric any of the runs has, sorted.")
    differing_params: list[str] = Field(description="Parameters whose value is not the same in every run.")


class ModelVersionPublic(Model):
    model: str
    version: int
    status: str = Field(description="ready, pending_registration or failed_registration.")
    aliases: list[str]
    run_id: str | None
    experiment: str | None = None
    metric: str | None = Field(
        default=None, description="The metric the version was chosen by (its selfserve.metric tag)."
    )
    metric_value: float | None = Field(
        None, description="Its value on the held-out rows, when the training flow set it."
    )
    metrics: dict[str, float] = Field(description="The metrics of the run the version came from.")
    description: str = ""
    created_at: datetime | None


class ModelPublic(Model):
    name: str = Field(description="The model's name in the project (its MLflow name without '<project>.').")
    mlflow_name: str
    description: str
    aliases: dict[str, int] = Field(description="Alias -> version, e.g. champion and challenger.")
    champion: int | None
    challenger: int | None
    latest_version: int | None
    created_at: datetime | None
    updated_at: datetime | None


class PromotionPublic(Model):
    model: str
    version: int = Field(description="The version that became champion.")
    previous_version: int | None = Field(description="The champion before it, if any.")
    action: PromotionAction
    reason: str
    actor: str
    at: datetime


class ModelDetail(ModelPublic):
    versions: list[ModelVersionPublic] = Field(description="The newest versions, newest first.")
    promotions: list[PromotionPublic] = Field(description="Promotions and rollbacks, newest first.")


class PromoteRequest(Model):
    version: int = Field(ge=1, le=2**31 - 1, description="The version to make champion.")
    reason: Text = Field("", max_length=2000, description="Why: kept in the promotion history and the audit trail.")


class RollbackRequest(Model):
    reason: Text = Field("", max_length=2000, description="Why: kept in the promotion history and the audit trail.")


class LineageRun(Model):
    id: str
    name: str
    experiment: str
    status: str
    start_time: datetime | None
    end_time: datetime | None
    params: dict[str, str]
    metrics: dict[str, float]
    user: str | None = None


class LineageCode(Model):
    """What produced the run: the platform flow run and its deployment's code, or the source MLflow saw."""

    flow_run_id: str | None = None
    deployment: str | None = None
    entrypoint: str | None = None
    code_sha: str | None = Field(default=None, description="Hash of the deployed code archive in platform storage.")
    source_name: str | None = Field(default=None, description="MLflow's mlflow.source.name tag.")
    git_commit: str | None = Field(default=None, description="MLflow's mlflow.source.git.commit tag.")


class DeploymentRef(Model):
    """A serving deployment of the version (none until serving exists)."""

    name: str
    created_at: datetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ModelLineage(Model):
    """Dataset versions -> run -> code -> model version -> deployments."""

    model: str
    version: int
    status: str
    aliases: list[str]
    created_at: datetime | None
    datasets: list[DatasetRef]
    run: LineageRun | None = Field(description="The MLflow run the version came from (None if it has none).")
    code: LineageCode | None
    deployments: list[DeploymentRef]
    promotions: list[PromotionPublic] = Field(description="This version's promotions and rollbacks, newest first.")
