"""Deployments and routes: what the API does with them, each call authorized and audited.

A deployment row is the wish "serve this model version"; the serving runtime reads it, starts the
BentoML process and writes back its state. A route's spec (targets with weights, sticky key, shadow,
feature view) is kept with every earlier spec as numbered revisions, so that ``history`` shows
every change and ``rollback`` returns to the spec before the current one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.policy import audit, quotas
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.serving import (
    DeploymentCreate,
    DeploymentLogs,
    DeploymentPublic,
    FeatureColumn,
    RouteCreate,
    RoutePublic,
    RouteRevisionPublic,
    RouteSpec,
    parse_model_ref,
)
from selfserve.settings import Settings
from selfserve.store.tables import FeatureView, Project, ServingDeployment, ServingRoute, ServingRouteRevision

log = logging.getLogger("selfserve.serving")
MAX_LOG_LINES = 5000


class Runtime:
    """The API's line to the serving runtime: nudges (a deployment changed) and deployment logs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.runner_key()}"}

    def nudge(self) -> None:
        """Wake the runtime so a change is acted on now, not at its next round. Best effort, off the request path."""
        url = f"{self.settings.serving_runtime_url}/nudge"

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, headers=self._headers, timeout=2.0)

        threading.Thread(target=send, name="nudge-serving", daemon=True).start()

    def logs(self, deployment_id: int, tail: int) -> list[str]:
        url = f"{self.settings.serving_runtime_url}/deployments/{deployment_id}/logs"
        try:
            r = httpx.get(url, params={"tail": tail}, headers=self._headers, timeout=10.0)
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"the serving runtime is not answering: {type(e).__name__}") from None
        if r.status_code == 404:
            return []
        if r.status_code != 200:
            raise ServiceUnavailable(f"the serving runtime answered {r.status_code} for the deployment's logs")
        return list(r.json().get("lines", []))


# -- deployments ---------------------------------------------------------------------------------------


def _routes_using(session: Session, proj: Project) -> dict[str, list[str]]:
    """Deployment name -> the routes that send it traffic (as a target or a shadow)."""
    using: dict[str, list[str]] = {}
    for route in session.scalars(select(ServingRoute).where(ServingRoute.project_id == proj.id)):
        spec = RouteSpec.model_validate(route.spec)
        for name in [*spec.targets, *([spec.shadow] if spec.shadow else [])]:
            using.setdefault(name, []).append(route.name)
    return using


def deployment_public(dep: ServingDeployment, routes: list[str] | None = None) -> DeploymentPublic:
    return DeploymentPublic(
        name=dep.name,
        model=dep.model,
        version=dep.version,
        model_ref=dep.model_ref,
        state=dep.state,  # type: ignore[arg-type]
        restarts=dep.restarts,
        last_error=dep.last_error,
        inputs=[FeatureColumn(name=c["name"], type=c["type"]) for c in dep.signature or []],
        routes=sorted(routes or []),
        created_by=dep.created_by,
        created_at=dep.created_at,
        ready_at=dep.ready_at,
    )


def _deployment(session: Session, proj: Project, name: str) -> ServingDeployment:
    dep = session.scalar(
        select(ServingDeployment).where(ServingDeployment.project_id == proj.id, ServingDeployment.name == name)
    )
    if dep is None:
        raise NotFound(f"deployment {name!r} not found in project {proj.name!r}")
    return dep


def list_deployments(session: Session, caller: Caller, project: str) -> list[DeploymentPublic]:
    proj, _ = authorize(session, caller, "deployment:read", project)
    using = _routes_using(session, proj)
    rows = session.scalars(
        select(ServingDeployment).where(ServingDeployment.project_id == proj.id).order_by(ServingDeployment.name)
    )
    return [deployment_public(d, using.get(d.name)) for d in rows]


def show_deployment(session: Session, caller: Caller, project: str, name: str) -> DeploymentPublic:
    proj, _ = authorize(session, caller, "deployment:read", project)
    dep = _deployment(session, proj, name)
    return deployment_public(dep, _routes_using(session, proj).get(name))


def create_deployment(
    session: Session, caller: Caller, project: str, body: DeploymentCreate, *, registry: Any, object_store: Any
) -> DeploymentPublic:
    """Publish the model version's file to platform storage and ask the runtime to serve it.

    Raises:
        Conflict: a deployment of that name exists.
        NotFound: no such model, alias or version in the project.
        InvalidInput: the version is not a scikit-learn model saved with skops.
        QuotaExceeded: the project runs as many deployments as its quota allows.
        ServiceUnavailable: the model registry is off or not answering.
    """
    from selfserve.serving.artifacts import publish_model

    proj, _ = authorize(session, caller, "deployment:write", project)
    if session.scalar(
        select(ServingDeployment.id).where(ServingDeployment.project_id == proj.id, ServingDeployment.name == body.name)
    ):
        raise Conflict(f"deployment {body.name!r} already exists in project {project!r}")
    quotas.check(session, proj, "deployments", 1)
    if not registry.enabled:
        raise ServiceUnavailable("models are not enabled on this platform (models.enabled is off)")
    model, ref = parse_model_ref(body.model)
    artifact = publish_model(registry, object_store, project, model, ref)
    quotas.reserve(session, proj, "deployments", 1)
    dep = ServingDeployment(
        project_id=proj.id,
        name=body.name,
        model=model,
        version=artifact.version,
        model_ref=body.model if "@" in body.model else f"{model}@champion",
        artifact=artifact.key,
        signature=list(artifact.inputs),
        state="pending",
        created_by=caller.name,
    )
    session.add(dep)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"deployment {body.name!r} already exists in project {project!r}") from None
    audit.record(
        session,
        caller.name,
        "deployment:create",
        project=project,
        target=f"deployment/{body.name}",
        detail={"model": model, "version": artifact.version, "ref": body.model},
    )
    session.commit()
    return deployment_public(dep)


def delete_deployment(session: Session, caller: Caller, project: str, name: str) -> None:
    """Stop serving. Refused while a route sends the deployment traffic: move the route first."""
    proj, _ = authorize(session, caller, "deployment:write", project)
    dep = _deployment(session, proj, name)
    routes = _routes_using(session, proj).get(name)
    if routes:
        raise Conflict(
            f"deployment {name!r} is in use by route(s) {', '.join(sorted(routes))}; "
            "switch or delete those routes first",
            detail={"routes": sorted(routes)},
        )
    session.delete(dep)
    quotas.add_usage(session, proj, "deployments", -1)
    audit.record(session, caller.name, "deployment:delete", project=project, target=f"deployment/{name}")
    session.commit()


def deployment_logs(
    session: Session, caller: Caller, project: str, name: str, tail: int, runtime: Runtime
) -> DeploymentLogs:
    proj, _ = authorize(session, caller, "deployment:read", project)
    dep = _deployment(session, proj, name)
    dep_id = dep.id
    session.rollback()  # no transaction held open across the call to the runtime
    return DeploymentLogs(deployment=name, lines=runtime.logs(dep_id, min(tail, MAX_LOG_LINES)))


# -- routes --------------------------------------------------------------------------------------------


def route_public(route: ServingRoute) -> RoutePublic:
    return RoutePublic(
        name=route.name,
        spec=RouteSpec.model_validate(route.spec),
        revision=route.revision,
        predict_path=f"/api/v1/projects/{{project}}/routes/{route.name}/predict",
        created_by=route.created_by,
        created_at=route.created_at,
        updated_at=route.updated_at,
    )


def _route_public(proj: Project, route: ServingRoute) -> RoutePublic:
    pub = route_public(route)
    pub.predict_path = f"/api/v1/projects/{proj.name}/routes/{route.name}/predict"
    return pub


def _route(session: Session, proj: Project, name: str, *, lock: bool = False) -> ServingRoute:
    stmt = select(ServingRoute).where(ServingRoute.project_id == proj.id, ServingRoute.name == name)
    if lock:
        stmt = stmt.with_for_update()
    route = session.scalar(stmt)
    if route is None:
        raise NotFound(f"route {name!r} not found in project {proj.name!r}")
    return route


def _check_spec(session: Session, proj: Project, spec: RouteSpec) -> None:
    """Every deployment and the feature view the spec names exist in the project."""
    names = {d for d in session.scalars(select(ServingDeployment.name).where(ServingDeployment.project_id == proj.id))}
    wanted = [*spec.targets, *([spec.shadow] if spec.shadow else [])]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise InvalidInput(
            f"no deployment {', '.join(repr(n) for n in missing)} in project {proj.name!r}; "
            "create it with `selfserve deployment create`",
            detail={"missing": missing},
        )
    if spec.feature_view and not session.scalar(
        select(FeatureView.id).where(FeatureView.project_id == proj.id, FeatureView.name == spec.feature_view)
    ):
        raise InvalidInput(f"no feature view {spec.feature_view!r} in project {proj.name!r}")


def _spec_dict(spec: RouteSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def _revise(session: Session, route: ServingRoute, spec: RouteSpec, action: str, actor: str, reason: str = "") -> None:
    route.revision += 1
    route.spec = _spec_dict(spec)
    session.add(
        ServingRouteRevision(
            route_id=route.id, revision=route.revision, spec=route.spec, action=action, reason=reason, actor=actor
        )
    )


def list_routes(session: Session, caller: Caller, project: str) -> list[RoutePublic]:
    proj, _ = authorize(session, caller, "route:read", project)
    rows = session.scalars(select(ServingRoute).where(ServingRoute.project_id == proj.id).order_by(ServingRoute.name))
    return [_route_public(proj, r) for r in rows]


def show_route(session: Session, caller: Caller, project: str, name: str) -> RoutePublic:
    proj, _ = authorize(session, caller, "route:read", project)
    return _route_public(proj, _route(session, proj, name))


def create_route(session: Session, caller: Caller, project: str, body: RouteCreate) -> RoutePublic:
    proj, _ = authorize(session, caller, "route:write", project)
    spec = RouteSpec.model_validate(body.model_dump(exclude={"name"}))
    if session.scalar(
        select(ServingRoute.id).where(ServingRoute.project_id == proj.id, ServingRoute.name == body.name)
    ):
        raise Conflict(f"route {body.name!r} already exists in project {project!r}")
    _check_spec(session, proj, spec)
    route = ServingRoute(project_id=proj.id, name=body.name, spec=_spec_dict(spec), revision=1, created_by=caller.name)
    session.add(route)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"route {body.name!r} already exists in project {project!r}") from None
    session.add(
        ServingRouteRevision(route_id=route.id, revision=1, spec=route.spec, action="create", actor=caller.name)
    )
    audit.record(session, caller.name, "route:create", project=project, target=f"route/{body.name}", detail=route.spec)
    session.commit()
    return _route_public(proj, route)


def set_route(session: Session, caller: Caller, project: str, name: str, spec: RouteSpec) -> RoutePublic:
    """Replace the route's spec (a canary: ``{"v7": 90, "v8": 10}``, a sticky key, a shadow)."""
    proj, _ = authorize(session, caller, "route:write", project)
    route = _route(session, proj, name, lock=True)
    _check_spec(session, proj, spec)
    before = route.spec
    _revise(session, route, spec, "set", caller.name)
    audit.record(
        session,
        caller.name,
        "route:set",
        project=project,
        target=f"route/{name}",
        detail={"before": before, "after": route.spec, "revision": route.revision},
    )
    session.commit()
    return _route_public(proj, route)


def switch_route(session: Session, caller: Caller, project: str, name: str, to: str, reason: str = "") -> RoutePublic:
    """Blue/green: all traffic to ``to`` at once. The sticky key and feature view stay; a shadow that
    is the new target is dropped."""
    proj, _ = authorize(session, caller, "route:write", project)
    route = _route(session, proj, name, lock=True)
    old = RouteSpec.model_validate(route.spec)
    spec = RouteSpec(
        targets={to: 100},
        sticky_key=old.sticky_key,
        shadow=None if old.shadow == to else old.shadow,
        feature_view=old.feature_view,
    )
    _check_spec(session, proj, spec)
    _revise(session, route, spec, "switch", caller.name, reason)
    audit.record(
        session,
        caller.name,
        "route:switch",
        project=project,
        target=f"route/{name}",
        detail={"before": old.model_dump(mode="json"), "after": route.spec, "reason": reason},
    )
    session.commit()
    return _route_public(proj, route)


def rollback_route(session: Session, caller: Caller, project: str, name: str, reason: str = "") -> RoutePublic:
    """Return to the spec the route had before its current one (recorded as a new revision)."""
    proj, _ = authorize(session, caller, "route:write", project)
    route = _route(session, proj, name, lock=True)
    previous = session.scalar(
        select(ServingRouteRevision).where(
            ServingRouteRevision.route_id == route.id, ServingRouteRevision.revision == route.revision - 1
        )
    )
    if previous is None:
        raise Conflict(f"route {name!r} has had one spec only; there is nothing to roll back to")
    spec = RouteSpec.model_validate(previous.spec)
    try:
        _check_spec(session, proj, spec)
    except InvalidInput as e:
        raise Conflict(f"cannot roll back route {name!r} to revision {previous.revision}: {e.message}") from None
    before = route.spec
    _revise(session, route, spec, "rollback", caller.name, reason)
    audit.record(
        session,
        caller.name,
        "route:rollback",
        project=project,
        target=f"route/{name}",
        detail={"before": before, "after": route.spec, "to_revision": previous.revision, "reason": reason},
    )
    session.commit()
    return _route_public(proj, route)


def route_history(session: Session, caller: Caller, project: str, name: str) -> list[RouteRevisionPublic]:
    proj, _ = authorize(session, caller, "route:read", project)
    route = _route(session, proj, name)
    rows = session.scalars(
        select(ServingRouteRevision)
        .where(ServingRouteRevision.route_id == route.id)
        .order_by(ServingRouteRevision.revision.desc())
    )
    return [
        RouteRevisionPublic(
            revision=r.revision,
            action=r.action,  # type: ignore[arg-type]
            spec=RouteSpec.model_validate(r.spec),
            reason=r.reason,
            actor=r.actor,
            at=r.at,
        )
        for r in rows
    ]


def delete_route(session: Session, caller: Caller, project: str, name: str) -> None:
    """Remove the route; its prediction log (``predictions-<route>``) stays a dataset of the project."""
    proj, _ = authorize(session, caller, "route:write", project)
    route = _route(session, proj, name)
    session.delete(route)
    audit.record(session, caller.name, "route:delete", project=project, target=f"route/{name}")
    session.commit()
