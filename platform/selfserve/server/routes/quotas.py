from __future__ import annotations

from fastapi import APIRouter, Query

from selfserve import schemas
from selfserve.policy import projects
from selfserve.server.deps import CallerDep, ProjectName, ProvisionersDep, RowId, SessionDep, action

router = APIRouter(tags=["quotas"])


@router.get("/projects/{project}/quotas", response_model=schemas.QuotaPublic, openapi_extra=action("quota:read"))
def show_quotas(project: ProjectName, caller: CallerDep, session: SessionDep) -> schemas.QuotaPublic:
    """Each limit with the project's current use."""
    return projects.show_quotas(session, caller, project)


@router.put("/projects/{project}/quotas", response_model=schemas.QuotaPublic, openapi_extra=action("quota:set"))
def set_quotas(
    project: ProjectName,
    body: schemas.QuotaSet,
    caller: CallerDep,
    session: SessionDep,
    provisioners: ProvisionersDep,
) -> schemas.QuotaPublic:
    """Set limits (admins only)."""
    return projects.set_quotas(session, caller, project, body, provisioners)


@router.get("/projects/{project}/usage", response_model=schemas.UsagePublic, openapi_extra=action("quota:read"))
def show_usage(project: ProjectName, caller: CallerDep, session: SessionDep) -> schemas.UsagePublic:
    """Every accounted counter: storage, runs, deployments, CPU-seconds, predictions."""
    return projects.show_usage(session, caller, project)


@router.post(
    "/projects/{project}/quota-requests",
    response_model=schemas.QuotaRequestPublic,
    status_code=201,
    openapi_extra=action("quota:request"),
)
def request_quota(
    project: ProjectName, body: schemas.QuotaRequestCreate, caller: CallerDep, session: SessionDep
) -> schemas.QuotaRequestPublic:
    """Ask the admins for higher limits."""
    return projects.request_quota(session, caller, project, body)


@router.get(
    "/projects/{project}/quota-requests",
    response_model=list[schemas.QuotaRequestPublic],
    openapi_extra=action("quota:read"),
)
def list_project_requests(
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    status: str | None = Query(None, pattern="^(pending|approved|denied)$"),
) -> list[schemas.QuotaRequestPublic]:
    return projects.list_requests(session, caller, project, status)


@router.get(
    "/quota-requests",
    response_model=list[schemas.QuotaRequestPublic],
    openapi_extra=action("quota:approve", "platform"),
)
def list_all_requests(
    caller: CallerDep, session: SessionDep, status: str | None = Query(None, pattern="^(pending|approved|denied)$")
) -> list[schemas.QuotaRequestPublic]:
    """Every project's quota requests (admins only)."""
    return projects.list_requests(session, caller, None, status)


@router.post(
    "/quota-requests/{request_id}/approve",
    response_model=schemas.QuotaRequestPublic,
    openapi_extra=action("quota:approve", "platform"),
)
def approve(
    request_id: RowId,
    body: schemas.QuotaDecision,
    caller: CallerDep,
    session: SessionDep,
    provisioners: ProvisionersDep,
) -> schemas.QuotaRequestPublic:
    return projects.decide_request(session, caller, request_id, True, body, provisioners)


@router.post(
    "/quota-requests/{request_id}/deny",
    response_model=schemas.QuotaRequestPublic,
    openapi_extra=action("quota:deny", "platform"),
)
def deny(
    request_id: RowId,
    body: schemas.QuotaDecision,
    caller: CallerDep,
    session: SessionDep,
    provisioners: ProvisionersDep,
) -> schemas.QuotaRequestPublic:
    return projects.decide_request(session, caller, request_id, False, body, provisioners)
