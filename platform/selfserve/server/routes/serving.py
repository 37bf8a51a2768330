"""Serving: deployments, routes, predictions through the gateway, feedback, and the gateway's metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from selfserve.errors import NotFound, ServiceUnavailable
from selfserve.policy.authz import authorize, require_admin
from selfserve.schemas.serving import (
    DeploymentCreate,
    DeploymentLogs,
    DeploymentPublic,
    FeedbackRequest,
    FeedbackResult,
    PredictRequest,
    PredictResponse,
    RouteCreate,
    RoutePublic,
    RouteRevisionPublic,
    RouteRollback,
    RouteSpec,
    RouteStats,
    RouteSwitch,
    check_route_name,
)
from selfserve.server.deps import CallerDep, ObjectStoreDep, ProjectName, SessionDep, action
from selfserve.serving import service
from selfserve.serving.gateway import Gateway
from selfserve.serving.predlog import feedback_dataset
from selfserve.store.tables import ServingRoute

router = APIRouter(prefix="/projects/{project}", tags=["serving"])
metrics_router = APIRouter(tags=["serving"])

DeploymentName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
RouteName = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$")]


async def get_gateway(request: Request) -> Gateway:
    # async: a plain def would send every predict through the threadpool for one attribute read
    gateway: Gateway | None = request.app.state.gateway
    if gateway is None:
        raise ServiceUnavailable("serving is not enabled on this platform (serving.enabled is off)")
    return gateway


def get_runtime(request: Request) -> service.Runtime:
    return request.app.state.serving_runtime  # type: ignore[no-any-return]


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
RuntimeDep = Annotated[service.Runtime, Depends(get_runtime)]


# -- deployments ---------------------------------------------------------------------------------------


@router.get("/deployments", response_model=list[DeploymentPublic], openapi_extra=action("deployment:read"))
def list_deployments(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[DeploymentPublic]:
    """The project's deployments with their state (pending, starting, ready, restarting, failed)."""
    return service.list_deployments(session, caller, project)


@router.post("/deployments", response_model=DeploymentPublic, status_code=201, openapi_extra=action("deployment:write"))
def create_deployment(
    project: ProjectName,
    body: DeploymentCreate,
    caller: CallerDep,
    session: SessionDep,
    request: Request,
    store: ObjectStoreDep,
    runtime: RuntimeDep,
    _: GatewayDep,
) -> DeploymentPublic:
    """Serve a registered model version (by alias or number). It starts in the background: watch its state."""
    created = service.create_deployment(
        session, caller, project, body, registry=request.app.state.registry, object_store=store
    )
    runtime.nudge()
    return created


@router.get("/deployments/{name}", response_model=DeploymentPublic, openapi_extra=action("deployment:read"))
def show_deployment(
    project: ProjectName, name: DeploymentName, caller: CallerDep, session: SessionDep
) -> DeploymentPublic:
    return service.show_deployment(session, caller, project, name)


@router.get("/deployments/{name}/logs", response_model=DeploymentLogs, openapi_extra=action("deployment:read"))
def deployment_logs(
    project: ProjectName,
    name: DeploymentName,
    caller: CallerDep,
    session: SessionDep,
    runtime: RuntimeDep,
    tail: int = Query(200, ge=1, le=service.MAX_LOG_LINES, description="How many of the last lines."),
) -> DeploymentLogs:
    """The last lines the deployment's BentoML server wrote (start-up, errors, restarts)."""
    return service.deployment_logs(session, caller, project, name, tail, runtime)


@router.delete("/deployments/{name}", status_code=204, openapi_extra=action("deployment:write"))
def delete_deployment(
    project: ProjectName, name: DeploymentName, caller: CallerDep, session: SessionDep, runtime: RuntimeDep
) -> None:
    """Stop serving the deployment. Refused (409) while a route sends it traffic."""
    service.delete_deployment(session, caller, project, name)
    runtime.nudge()


# -- routes --------------------------------------------------------------------------------------------


@router.get("/routes", response_model=list[RoutePublic], openapi_extra=action("route:read"))
def list_routes(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[RoutePublic]:
    return service.list_routes(session, caller, project)


@router.post("/routes", response_model=RoutePublic, status_code=201, openapi_extra=action("route:write"))
def create_route(
    project: ProjectName, body: RouteCreate, caller: CallerDep, session: SessionDep, gateway: GatewayDep
) -> RoutePublic:
    """A stable predict endpoint over one or more deployments (weights add up to 100)."""
    created = service.create_route(session, caller, project, body)
    gateway.forget(project, body.name)
    return created


@router.get("/routes/{name}", response_model=RoutePublic, openapi_extra=action("route:read"))
def show_route(project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep) -> RoutePublic:
    return service.show_route(session, caller, project, name)


@router.put("/routes/{name}", response_model=RoutePublic, openapi_extra=action("route:write"))
def set_route(
    project: ProjectName, name: RouteName, body: RouteSpec, caller: CallerDep, session: SessionDep, gateway: GatewayDep
) -> RoutePublic:
    """Replace the route's spec: a canary (90/10), an A/B test (a sticky key), a shadow."""
    updated = service.set_route(session, caller, project, name, body)
    gateway.forget(project, name)
    return updated


@router.post("/routes/{name}/switch", response_model=RoutePublic, openapi_extra=action("route:write"))
def switch_route(
    project: ProjectName,
    name: RouteName,
    body: RouteSwitch,
    caller: CallerDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> RoutePublic:
    """Blue/green: all traffic to one deployment at once."""
    updated = service.switch_route(session, caller, project, name, body.to, body.reason)
    gateway.forget(project, name)
    return updated


@router.post("/routes/{name}/rollback", response_model=RoutePublic, openapi_extra=action("route:write"))
def rollback_route(
    project: ProjectName,
    name: RouteName,
    body: RouteRollback,
    caller: CallerDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> RoutePublic:
    """Return to the spec before the current one."""
    updated = service.rollback_route(session, caller, project, name, body.reason)
    gateway.forget(project, name)
    return updated


@router.get("/routes/{name}/history", response_model=list[RouteRevisionPublic], openapi_extra=action("route:read"))
def route_history(
    project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep
) -> list[RouteRevisionPublic]:
    """Every spec the route has had, newest first."""
    return service.route_history(session, caller, project, name)


@router.get("/routes/{name}/stats", response_model=RouteStats, openapi_extra=action("route:read"))
def route_stats(
    project: ProjectName,
    name: RouteName,
    caller: CallerDep,
    session: SessionDep,
    gateway: GatewayDep,
    window: int = Query(900, ge=60, le=3600, description="Seconds of traffic to summarise."),
) -> RouteStats:
    """Requests, errors and latency per target as this API process saw them (the last hour at most)."""
    proj, _ = authorize(session, caller, "route:read", project)
    service.show_route(session, caller, project, name)
    targets, timeline = gateway.stats.view(proj.id, name, window)
    return RouteStats(route=name, window_seconds=window, targets=targets, timeline=timeline)


@router.delete("/routes/{name}", status_code=204, openapi_extra=action("route:write"))
def delete_route(
    project: ProjectName, name: RouteName, caller: CallerDep, session: SessionDep, gateway: GatewayDep
) -> None:
    """Remove the route. Its prediction log stays, as the dataset predictions-<route>."""
    service.delete_route(session, caller, project, name)
    gateway.forget(project, name)


# -- predict and feedback ------------------------------------------------------------------------------


@router.post(
    "/routes/{name}/predict",
    response_model=PredictResponse,
    response_class=Response,
    responses={200: {"model": PredictResponse, "content": {"application/json": {}}}},
    openapi_extra=action("route:invoke"),
)
async def predict(
    project: ProjectName, name: RouteName, body: PredictRequest, caller: CallerDep, gateway: GatewayDep
) -> Response:
    """Predict with the route's model: one or many rows. The answer names the request (for feedback)
    and the deployment that answered."""
    content = await gateway.predict(caller, project, name, body.rows)
    return Response(content=content, media_type="application/json")


@router.post(
    "/routes/{name}/feedback", response_model=FeedbackResult, status_code=202, openapi_extra=action("route:invoke")
)
def feedback(
    project: ProjectName,
    name: RouteName,
    body: FeedbackRequest,
    caller: CallerDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> FeedbackResult:
    """Labels for earlier predictions, by request id; written to the dataset feedback-<route> with the
    next flush of the prediction log."""
    proj, _ = authorize(session, caller, "route:invoke", project)
    check_route_name(name)
    if session.query(ServingRoute.id).filter_by(project_id=proj.id, name=name).scalar() is None:
        raise NotFound(f"route {name!r} not found in project {project!r}")
    gateway.predlog.add_labels(proj.id, project, name, [(label.request_id, label.label) for label in body.labels])
    return FeedbackResult(accepted=len(body.labels), dataset=feedback_dataset(name))


# -- metrics -------------------------------------------------------------------------------------------


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    openapi_extra=action("metrics:read", "platform"),
)
def metrics(caller: CallerDep, gateway: GatewayDep) -> Response:
    """Prometheus metrics of the gateway: requests, errors and latency per project, route and target.
    For platform admins (a scrape job authenticates with an admin's API token)."""
    require_admin(caller, "metrics:read")
    return Response(content=generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)
