"""Pipelines: flow deployments (built-in and the project's own code) and their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request, UploadFile
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from selfserve.errors import InvalidInput, PayloadTooLarge
from selfserve.pipelines import service
from selfserve.pipelines.envs import MAX_REQUIREMENTS_BYTES
from selfserve.pipelines.service import Pipelines
from selfserve.policy.authz import authorize
from selfserve.schemas.pipelines import (
    BuiltinDeploy,
    FlowDeploymentPublic,
    FlowDeploySpec,
    RunLogs,
    RunPublic,
    RunRequest,
)
from selfserve.server.deps import CallerDep, ProjectName, SessionDep, action

router = APIRouter(prefix="/projects/{project}", tags=["pipelines"])
DEPLOY_PATH = r"/api/v1/projects/[^/]+/flows/code"
DEPLOY_ENVELOPE_BYTES = MAX_REQUIREMENTS_BYTES + (1 << 16)
FlowName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
AfterQuery = Query(None, description="Only lines after this time (for --follow).")
RunId = Annotated[str, Path(min_length=1, max_length=64)]


def get_pipelines(request: Request) -> Pipelines:
    return request.app.state.pipelines  # type: ignore[no-any-return]


PipelinesDep = Annotated[Pipelines, Depends(get_pipelines)]


@router.get("/flows", response_model=list[FlowDeploymentPublic], openapi_extra=action("flow:read"))
def list_flows(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[FlowDeploymentPublic]:
    return service.list_deployments(session, caller, project)


@router.get("/flows/{name}", response_model=FlowDeploymentPublic, openapi_extra=action("flow:read"))
def show_flow(project: ProjectName, name: FlowName, caller: CallerDep, session: SessionDep) -> FlowDeploymentPublic:
    return service.show(session, caller, project, name)


async def _read_limited(upload: UploadFile, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
    return bytes(data)


@router.post("/flows/code", response_model=FlowDeploymentPublic, status_code=201, openapi_extra=action("flow:write"))
async def deploy_code(
    request: Request,
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    pipelines: PipelinesDep,
    code: UploadFile,
    spec: Annotated[str, Form(max_length=200_000, description="A FlowDeploySpec as JSON.")],
    requirements: UploadFile | None = None,
) -> FlowDeploymentPublic:
    """Deploy the project's own flow: a zip of its code, checked by importing it in a confined process.

    With ``requirements``, an isolated environment is built for it (cached by the requirements' hash).
    """
    await run_in_threadpool(authorize, session, caller, "flow:write", project)
    try:
        parsed = FlowDeploySpec.model_validate_json(spec)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise InvalidInput(f"invalid deployment spec: {where}: {first['msg']}") from None
    archive = await _read_limited(code, pipelines.settings.pipelines.max_code_bytes, "the flow code")
    reqs = None
    if requirements is not None:
        raw = await _read_limited(requirements, MAX_REQUIREMENTS_BYTES, "the requirements file")
        try:
            reqs = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the requirements file is not UTF-8 text") from None
    dep = await run_in_threadpool(
        service.deploy_code,
        pipelines,
        session,
        caller,
        project,
        name=parsed.name,
        entrypoint=parsed.entrypoint,
        archive=archive,
        requirements=reqs,
        parameters=parsed.parameters,
        schedule=parsed.schedule,
        retries=parsed.retries,
        timeout_seconds=parsed.timeout_seconds,
        description=parsed.description,
    )
    await run_in_threadpool(session.commit)
    return dep


@router.post("/flows/builtin", response_model=FlowDeploymentPublic, status_code=201, openapi_extra=action("flow:write"))
def deploy_builtin(
    project: ProjectName, body: BuiltinDeploy, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> FlowDeploymentPublic:
    """Deploy a built-in flow (ingest, transform) with its parameters, on a schedule or for on-demand runs."""
    dep = service.deploy_builtin(pipelines, session, caller, project, body)
    session.commit()
    return dep


@router.post("/flows/{name}/pause", response_model=FlowDeploymentPublic, openapi_extra=action("flow:write"))
def pause_flow(
    project: ProjectName, name: FlowName, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> FlowDeploymentPublic:
    """Stop scheduling runs (runs on demand still work)."""
    dep = service.set_paused(pipelines, session, caller, project, name, True)
    session.commit()
    return dep


@router.post("/flows/{name}/resume", response_model=FlowDeploymentPublic, openapi_extra=action("flow:write"))
def resume_flow(
    project: ProjectName, name: FlowName, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> FlowDeploymentPublic:
    dep = service.set_paused(pipelines, session, caller, project, name, False)
    session.commit()
    return dep


@router.delete("/flows/{name}", status_code=204, openapi_extra=action("flow:write"))
def delete_flow(
    project: ProjectName, name: FlowName, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> None:
    service.delete(pipelines, session, caller, project, name)
    session.commit()


@router.post("/flows/{name}/runs", response_model=RunPublic, status_code=201, openapi_extra=action("flow:run"))
def run_flow(
    project: ProjectName,
    name: FlowName,
    body: RunRequest,
    caller: CallerDep,
    session: SessionDep,
    pipelines: PipelinesDep,
) -> RunPublic:
    """Start a run now, with parameter overrides."""
    run = service.start_run(pipelines, session, caller, project, name, body.parameters)
    session.commit()
    return run


@router.get("/runs", response_model=list[RunPublic], openapi_extra=action("flow:read"))
def list_runs(
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    pipelines: PipelinesDep,
    state: str | None = Query(None, max_length=20),
    flow: str | None = Query(None, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$"),
    limit: int = Query(50, ge=1, le=500),
) -> list[RunPublic]:
    """Runs of the project's deployments, newest first."""
    return service.list_runs(pipelines, session, caller, project, state=state, flow=flow, limit=limit)


@router.get("/runs/{run_id}", response_model=RunPublic, openapi_extra=action("flow:read"))
def show_run(
    project: ProjectName, run_id: RunId, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> RunPublic:
    return service.show_run(pipelines, session, caller, project, run_id)


@router.get("/runs/{run_id}/logs", response_model=RunLogs, openapi_extra=action("flow:read"))
def run_logs(
    project: ProjectName,
    run_id: RunId,
    caller: CallerDep,
    session: SessionDep,
    pipelines: PipelinesDep,
    after: datetime | None = AfterQuery,
    limit: int = Query(200, ge=1, le=200),
) -> RunLogs:
    return service.run_logs(pipelines, session, caller, project, run_id, after=after, limit=limit)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic, openapi_extra=action("flow:run"))
def cancel_run(
    project: ProjectName, run_id: RunId, caller: CallerDep, session: SessionDep, pipelines: PipelinesDep
) -> RunPublic:
    run = service.cancel_run(pipelines, session, caller, project, run_id)
    session.commit()
    return run
