from __future__ import annotations

from fastapi import APIRouter

from selfserve.data import sources
from selfserve.schemas.data import SourceCreate, SourcePublic, SourceTest
from selfserve.server.deps import CallerDep, DatasetName, ProjectName, SessionDep, action

router = APIRouter(prefix="/projects/{project}/sources", tags=["sources"])


@router.get("", response_model=list[SourcePublic], openapi_extra=action("source:read"))
def list_sources(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[SourcePublic]:
    """The project's sources (secrets are never returned, only their names)."""
    return sources.list_(session, caller, project)


@router.post("", response_model=SourcePublic, status_code=201, openapi_extra=action("source:write"))
def add_source(project: ProjectName, body: SourceCreate, caller: CallerDep, session: SessionDep) -> SourcePublic:
    """Add a source; its secrets are encrypted at rest."""
    return sources.create(session, caller, project, body)


@router.get("/{name}", response_model=SourcePublic, openapi_extra=action("source:read"))
def show_source(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> SourcePublic:
    return sources.show(session, caller, project, name)


@router.post("/{name}/test", response_model=SourceTest, openapi_extra=action("source:read"))
def test_source(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> SourceTest:
    """Check that the source answers with its credentials."""
    return sources.test(session, caller, project, name)


@router.delete("/{name}", status_code=204, openapi_extra=action("source:write"))
def remove_source(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> None:
    sources.remove(session, caller, project, name)
