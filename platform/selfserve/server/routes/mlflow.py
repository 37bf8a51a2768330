"""A member's own MLflow access: the tracking server, the project's workspace and their account."""

from __future__ import annotations

from fastapi import APIRouter, Request

from selfserve.ml.access import user_env
from selfserve.schemas.ml import MLflowEnv
from selfserve.server.deps import CallerDep, ProjectName, ProvisionersDep, SessionDep, action

router = APIRouter(prefix="/projects/{project}", tags=["models"])


@router.get("/mlflow", response_model=MLflowEnv, openapi_extra=action("experiment:read"))
def mlflow_env(
    request: Request, project: ProjectName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> MLflowEnv:
    """Your own MLflow account for the project (made on first use), with the grants of your role.

    Point the ``mlflow`` client at it with the four ``MLFLOW_*`` variables; experiments are named
    ``<project>/<name>`` and registered models ``<project>.<name>``. Answers 503 when models are off.
    """
    return user_env(session, caller, project, request.app.state.settings, provisioners)
