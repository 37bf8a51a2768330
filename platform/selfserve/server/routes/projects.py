from __future__ import annotations

from fastapi import APIRouter, Request

from selfserve import schemas
from selfserve.policy import projects
from selfserve.server.deps import CallerDep, ProjectName, ProvisionersDep, SessionDep, UserName, action, read_db

router = APIRouter(prefix="/projects", tags=["projects"])


@router.get("", response_model=list[schemas.ProjectPublic], openapi_extra=action("project:list", "self"))
async def list_projects(request: Request, caller: CallerDep, session: SessionDep) -> list[schemas.ProjectPublic]:
    """The caller's projects (admins: every project)."""
    return await read_db(request, projects.list_visible, session, caller)


@router.post("", response_model=schemas.ProjectPublic, status_code=201, openapi_extra=action("project:create", "self"))
def create_project(
    body: schemas.ProjectCreate, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> schemas.ProjectPublic:
    """Create a project: the caller becomes its owner; default quotas apply; engines are provisioned."""
    return projects.create(session, caller, body, provisioners)


@router.get("/{project}", response_model=schemas.ProjectPublic, openapi_extra=action("project:read"))
def show_project(project: ProjectName, caller: CallerDep, session: SessionDep) -> schemas.ProjectPublic:
    """A project with its provisioning state."""
    return projects.show(session, caller, project)


@router.patch("/{project}", response_model=schemas.ProjectPublic, openapi_extra=action("project:update"))
def update_project(
    project: ProjectName, body: schemas.ProjectUpdate, caller: CallerDep, session: SessionDep
) -> schemas.ProjectPublic:
    """Change a project's description."""
    return projects.update(session, caller, project, body)


@router.delete("/{project}", status_code=204, openapi_extra=action("project:delete"))
def delete_project(project: ProjectName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep) -> None:
    """Delete a project and remove it from every engine."""
    projects.delete(session, caller, project, provisioners)


@router.post("/{project}/provision", response_model=schemas.ProjectPublic, openapi_extra=action("project:update"))
def provision_project(
    project: ProjectName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> schemas.ProjectPublic:
    """Retry the provisioning steps that are not ready."""
    return projects.provision(session, caller, project, provisioners)


@router.get("/{project}/members", response_model=list[schemas.MemberPublic], openapi_extra=action("member:read"))
def list_members(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[schemas.MemberPublic]:
    return projects.list_members(session, caller, project)


@router.post(
    "/{project}/members", response_model=schemas.MemberPublic, status_code=201, openapi_extra=action("member:write")
)
def add_member(
    project: ProjectName,
    body: schemas.MemberAdd,
    caller: CallerDep,
    session: SessionDep,
    provisioners: ProvisionersDep,
) -> schemas.MemberPublic:
    return projects.add_member(session, caller, project, body, provisioners)


@router.put("/{project}/members/{user}", response_model=schemas.MemberPublic, openapi_extra=action("member:write"))
def set_member_role(
    project: ProjectName,
    user: UserName,
    body: schemas.MemberUpdate,
    caller: CallerDep,
    session: SessionDep,
    provisioners: ProvisionersDep,
) -> schemas.MemberPublic:
    return projects.set_member_role(session, caller, project, user, body, provisioners)


@router.delete("/{project}/members/{user}", status_code=204, openapi_extra=action("member:write"))
def remove_member(
    project: ProjectName, user: UserName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> None:
    projects.remove_member(session, caller, project, user, provisioners)
