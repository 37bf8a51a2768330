"""Monitoring: monitors over routes, their runs and HTML reports, and alerts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from selfserve.monitoring import service
from selfserve.schemas.monitoring import AlertPublic, MonitorCreate, MonitorPublic, MonitorRunPublic, MonitorRunRecord
from selfserve.server.deps import CallerDep, ObjectStoreDep, ProjectName, RowId, SessionDep, action

router = APIRouter(prefix="/projects/{project}", tags=["monitoring"])
RouteName = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$")]
# A run sends its HTML report (several MB) with its summary: limited by monitoring.max_report_bytes.
RECORD_PATH = r"/api/v1/projects/[^/]+/monitors/[^/]+/runs"
RECORD_ENVELOPE_BYTES = 2 * 2**20


@router.get("/monitors", response_model=list[MonitorPublic], openapi_extra=action("monitor:read"))
def list_monitors(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[MonitorPublic]:
    """The project's monitors with their last run."""
    return service.list_monitors(session, caller, project)


@router.post("/monitors", response_model=MonitorPublic, status_code=201, openapi_extra=action("monitor:write"))
def create_monitor(
    project: ProjectName, body: MonitorCreate, caller: CallerDep, session: SessionDep, request: Request
) -> MonitorPublic:
    """Watch a route: drift of its logged inputs against a reference dataset version, on a schedule."""
    state = request.app.state
    return service.create(
        session,
        caller,
        project,
        body,
        settings=state.settings,
        registry=state.registry,
        pipelines=state.pipelines,
    )


@router.get("/monitors/{name}", response_model=MonitorPublic, openapi_extra=action("monitor:read"))
def show_monitor(project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep) -> MonitorPublic:
    return service.show(session, caller, project, name)


@router.delete("/monitors/{name}", status_code=204, openapi_extra=action("monitor:write"))
def delete_monitor(
    project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep, request: Request
) -> None:
    """Remove the monitor and its schedule; its alerts stay."""
    service.delete(session, caller, project, name, pipelines=request.app.state.pipelines)


@router.post("/monitors/{name}/run", status_code=202, openapi_extra=action("monitor:write"))
def run_monitor(
    project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep, request: Request
) -> dict[str, str]:
    """Run the monitor now (a run of its flow on the project's pool); follow it with `run show`."""
    return {"flow_run_id": service.run_now(session, caller, project, name, pipelines=request.app.state.pipelines)}


@router.get("/monitors/{name}/runs", response_model=list[MonitorRunPublic], openapi_extra=action("monitor:read"))
def list_runs(
    project: ProjectName,
    name: RouteName,
    caller: CallerDep,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=1000),
) -> list[MonitorRunPublic]:
    """The monitor's runs, newest first: status, drift share, per-column scores, quality."""
    return service.list_runs(session, caller, project, name, limit)


@router.post(
    "/monitors/{name}/runs", response_model=MonitorRunPublic, status_code=201, openapi_extra=action("monitor:write")
)
def record_run(
    project: ProjectName,
    name: RouteName,
    body: MonitorRunRecord,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    request: Request,
) -> MonitorRunPublic:
    """What a monitor run found (sent by the monitor flow): kept, and alerted on when it is drift."""
    return service.record_run(
        session, caller, project, name, body, settings=request.app.state.settings, object_store=store
    )


@router.get(
    "/monitors/{name}/report",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
    openapi_extra=action("monitor:read"),
)
def report(
    project: ProjectName,
    name: RouteName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    run: int | None = Query(None, ge=1, le=2**31 - 1, description="The run; default the newest with a report."),
) -> Response:
    """A run's full Evidently report (self-contained HTML)."""
    html = service.report(session, caller, project, name, run, store)
    return Response(content=html, media_type="text/html; charset=utf-8")


@router.get("/alerts", response_model=list[AlertPublic], openapi_extra=action("monitor:read"))
def list_alerts(
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    route: str | None = Query(None, max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$"),
    open_only: bool = Query(False, alias="open", description="Only alerts nobody acknowledged."),
    limit: int = Query(100, ge=1, le=1000),
) -> list[AlertPublic]:
    return service.list_alerts(session, caller, project, route=route, open_only=open_only, limit=limit)


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic, openapi_extra=action("monitor:write"))
def acknowledge(project: ProjectName, alert_id: RowId, caller: CallerDep, session: SessionDep) -> AlertPublic:
    return service.acknowledge(session, caller, project, alert_id)
