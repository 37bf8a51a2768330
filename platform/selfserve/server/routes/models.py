"""Experiments and models: runs, comparisons, registered models, promotions and lineage (MLflow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from selfserve.ml import registry
from selfserve.ml.registry import Registry
from selfserve.schemas.models import (
    CompareRequest,
    ExperimentPublic,
    ExperimentRun,
    ModelDetail,
    ModelLineage,
    ModelPublic,
    ModelVersionPublic,
    PromoteRequest,
    PromotionPublic,
    RollbackRequest,
    RunComparison,
)
from selfserve.server.deps import CallerDep, ProjectName, SessionDep, action

router = APIRouter(prefix="/projects/{project}", tags=["models"])
ExperimentName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=250,
        pattern=r"^[^/\x00-\x1f\x7f]+$",
        description="The experiment's name in the project (MLflow's '<project>/<name>'), its full MLflow name "
        "or its id.",
    ),
]
ModelName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The model's name in the project (MLflow's '<project>.<name>').",
    ),
]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="The model version.")]


def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


RegistryDep = Annotated[Registry, Depends(get_registry)]


@router.get("/experiments", response_model=list[ExperimentPublic], openapi_extra=action("experiment:read"))
def list_experiments(
    project: ProjectName, caller: CallerDep, session: SessionDep, reg: RegistryDep
) -> list[ExperimentPublic]:
    """The project's MLflow experiments, with their number of runs and the time of the newest."""
    return registry.list_experiments(reg, session, caller, project)


@router.get("/experiments/{name}/runs", response_model=list[ExperimentRun], openapi_extra=action("experiment:read"))
def list_experiment_runs(
    project: ProjectName,
    name: ExperimentName,
    caller: CallerDep,
    session: SessionDep,
    reg: RegistryDep,
    sort: str | None = Query(
        None, min_length=1, max_length=251, description="A metric to order by: 'f1' lowest first, '-f1' highest first."
    ),
    limit: int = Query(50, ge=1, le=1000),
) -> list[ExperimentRun]:
    """An experiment's runs with their parameters, metrics, dataset versions and registered versions."""
    return registry.list_runs(reg, session, caller, project, name, sort=sort, limit=limit)


@router.post("/runs/compare", response_model=RunComparison, openapi_extra=action("experiment:read"))
def compare_runs(
    project: ProjectName, body: CompareRequest, caller: CallerDep, session: SessionDep, reg: RegistryDep
) -> RunComparison:
    """2 to 10 MLflow runs of the project side by side (parameters and metrics, union of both)."""
    return registry.compare_runs(reg, session, caller, project, body.run_ids)


@router.get("/models", response_model=list[ModelPublic], openapi_extra=action("model:read"))
def list_models(project: ProjectName, caller: CallerDep, session: SessionDep, reg: RegistryDep) -> list[ModelPublic]:
    """The project's registered models and their aliases (champion, challenger)."""
    return registry.list_models(reg, session, caller, project)


@router.get("/models/{name}", response_model=ModelDetail, openapi_extra=action("model:read"))
def show_model(
    project: ProjectName,
    name: ModelName,
    caller: CallerDep,
    session: SessionDep,
    reg: RegistryDep,
    versions: int = Query(10, ge=0, le=1000, description="How many of the newest versions to include."),
) -> ModelDetail:
    """A model: aliases, newest versions and its promotion history."""
    return registry.show_model(reg, session, caller, project, name, versions=versions)


@router.get("/models/{name}/versions", response_model=list[ModelVersionPublic], openapi_extra=action("model:read"))
def list_versions(
    project: ProjectName,
    name: ModelName,
    caller: CallerDep,
    session: SessionDep,
    reg: RegistryDep,
    limit: int = Query(100, ge=1, le=1000),
) -> list[ModelVersionPublic]:
    """A model's versions, newest first."""
    return registry.list_versions(reg, session, caller, project, name, limit=limit)


@router.post("/models/{name}/promote", response_model=PromotionPublic, openapi_extra=action("model:promote"))
def promote(
    project: ProjectName,
    name: ModelName,
    body: PromoteRequest,
    caller: CallerDep,
    session: SessionDep,
    reg: RegistryDep,
) -> PromotionPublic:
    """Make a version the champion; the champion it replaces is kept for a rollback."""
    done = registry.promote(reg, session, caller, project, name, body.version, reason=body.reason)
    session.commit()
    return done


@router.post("/models/{name}/rollback", response_model=PromotionPublic, openapi_extra=action("model:promote"))
def rollback(
    project: ProjectName,
    name: ModelName,
    body: RollbackRequest,
    caller: CallerDep,
    session: SessionDep,
    reg: RegistryDep,
) -> PromotionPublic:
    """Make the champion before the current one champion again."""
    done = registry.rollback(reg, session, caller, project, name, reason=body.reason)
    session.commit()
    return done


@router.get(
    "/models/{name}/versions/{version}/lineage", response_model=ModelLineage, openapi_extra=action("model:read")
)
def lineage(
    project: ProjectName, name: ModelName, version: Version, caller: CallerDep, session: SessionDep, reg: RegistryDep
) -> ModelLineage:
    """Dataset versions -> run -> code -> this version -> deployments."""
    return registry.lineage(reg, session, caller, project, name, version)
