"""Monitors: what the API does with them, each call authorized and audited.

A monitor watches one route. Its runs are the built-in ``monitor`` flow on the project's pool (on
its schedule, or now with ``monitor run``): the run reads the window of the route's prediction log
and the reference dataset version through the platform, computes drift and quality with Evidently
(:mod:`selfserve.monitoring.drift`) and sends the summary and the HTML report back here
(:func:`record_run`). The summary is kept in the metadata DB, the report in the project's storage.
A run whose share of drifted columns reaches the monitor's threshold raises an alert, which is
POSTed to the monitor's webhook when it has one (to allowlisted hosts only).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from selfserve.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from selfserve.policy import audit, netguard
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.monitoring import AlertPublic, MonitorCreate, MonitorPublic, MonitorRunPublic, MonitorRunRecord
from selfserve.schemas.serving import RouteSpec
from selfserve.settings import Settings
from selfserve.store.tables import Alert, Dataset, Monitor, MonitorRun, Project, ServingDeployment, ServingRoute

log = logging.getLogger("selfserve.monitoring")
FLOW_PREFIX = "monitor-"


def flow_name(route: str) -> str:
    return f"{FLOW_PREFIX}{route}"


def report_key(project: str, route: str, run_id: int) -> str:
    return f"projects/{project}/monitoring/{route}/run-{run_id}.html"


def check_webhook(settings: Settings, url: str) -> None:
    """Refuse a webhook that would reach this machine or its private network, unless the admin allowed it.

    Raises:
        InvalidInput: naming the address and how an admin allows it.
    """
    mon = settings.monitoring
    try:
        netguard.check_url(url, allow_private=mon.webhook_allow_private, allowlist=mon.webhook_allowlist)
    except InvalidInput as e:
        raise InvalidInput(
            f"webhook refused: {e.message}; an admin may list the host in monitoring.webhook_allowlist",
            detail={"url": url},
        ) from None


# -- public views --------------------------------------------------------------------------------------


def run_public(run: MonitorRun) -> MonitorRunPublic:
    return MonitorRunPublic(
        id=run.id,
        status=run.status,  # type: ignore[arg-type]
        drift_share=run.drift_share,
        columns=run.columns or {},
        quality=run.quality or {},
        rows_reference=run.rows_reference,
        rows_current=run.rows_current,
        window_start=run.window_start,
        window_end=run.window_end,
        has_report=run.report_key is not None,
        flow_run_id=run.flow_run_id,
        error=run.error,
        created_at=run.created_at,
    )


def monitor_public(session: Session, mon: Monitor) -> MonitorPublic:
    last = session.scalar(
        select(MonitorRun).where(MonitorRun.monitor_id == mon.id).order_by(MonitorRun.id.desc()).limit(1)
    )
    return MonitorPublic(
        route=mon.route,
        reference_dataset=mon.reference_dataset,
        reference_version=mon.reference_version,
        label=mon.label,
        task=mon.task,
        window_seconds=mon.window_seconds,
        schedule=mon.schedule,
        drift_share=mon.drift_share,
        on_drift=mon.on_drift,
        policy=mon.policy,
        webhook_url=mon.webhook_url,
        flow_deployment=mon.flow_deployment,
        created_by=mon.created_by,
        created_at=mon.created_at,
        last_run=run_public(last) if last else None,
    )


def alert_public(a: Alert) -> AlertPublic:
    return AlertPublic(
        id=a.id,
        route=a.route,
        kind=a.kind,
        message=a.message,
        detail=a.detail or {},
        webhook=a.webhook,
        run_id=a.run_id,
        created_at=a.created_at,
        acknowledged_by=a.acknowledged_by,
        acknowledged_at=a.acknowledged_at,
    )


def _monitor(session: Session, proj: Project, route: str) -> Monitor:
    mon = session.scalar(select(Monitor).where(Monitor.project_id == proj.id, Monitor.route == route))
    if mon is None:
        raise NotFound(f"no monitor on route {route!r} in project {proj.name!r}")
    return mon


# -- monitors ------------------------------------------------------------------------------------------


def _reference(
    session: Session, proj: Project, route: ServingRoute, body: MonitorCreate, registry: Any, caller: Caller
) -> tuple[str, int, str | None, str | None]:
    """(dataset, version, label, task): as given, or what the route's main model was trained on."""
    label, task = body.label, None
    if body.reference is not None:
        name, _, version = body.reference.partition("@")
        ds = session.scalar(select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == name))
        if ds is None:
            raise InvalidInput(f"reference dataset {name!r} not found in project {proj.name!r}")
        if version and not 0 <= int(version) <= (ds.current_version if ds.current_version is not None else -1):
            raise InvalidInput(f"reference dataset {name!r} has no version {version}")
        if ds.current_version is None:
            raise InvalidInput(f"reference dataset {name!r} has no version yet")
        return name, int(version) if version else ds.current_version, label, task
    spec = RouteSpec.model_validate(route.spec)
    main = max(spec.targets, key=lambda t: spec.targets[t])
    dep = session.scalar(
        select(ServingDeployment).where(ServingDeployment.project_id == proj.id, ServingDeployment.name == main)
    )
    if dep is None or not registry.enabled:
        raise InvalidInput(f"give --reference DATASET@VERSION: route {route.name!r} has no model to take it from")
    from selfserve.ml import registry as registry_module

    lineage = registry_module.lineage(registry, session, caller, proj.name, dep.model, dep.version)
    params = lineage.run.params if lineage.run else {}
    name, version = params.get("dataset"), params.get("dataset_version")
    if not name or not str(version or "").isdigit():
        raise InvalidInput(
            f"give --reference DATASET@VERSION: {dep.model} v{dep.version} does not say which dataset version "
            "it was trained on"
        )
    return str(name), int(str(version)), label or params.get("target"), params.get("task")


def create(
    session: Session,
    caller: Caller,
    project: str,
    body: MonitorCreate,
    *,
    settings: Settings,
    registry: Any,
    pipelines: Any,
) -> MonitorPublic:
    """Create the monitor and, with a schedule, deploy its flow on the project's pool.

    Raises:
        NotFound: no such route. Conflict: the route has a monitor. InvalidInput: a bad reference or
        webhook. ServiceUnavailable: pipelines are off (a monitor runs as a flow).
    """
    proj, _ = authorize(session, caller, "monitor:write", project)
    route = session.scalar(
        select(ServingRoute).where(ServingRoute.project_id == proj.id, ServingRoute.name == body.route)
    )
    if route is None:
        raise NotFound(f"route {body.route!r} not found in project {project!r}")
    if session.scalar(select(Monitor.id).where(Monitor.project_id == proj.id, Monitor.route == body.route)):
        raise Conflict(f"route {body.route!r} already has a monitor; delete it first to change it")
    if body.webhook_url:
        check_webhook(settings, body.webhook_url)
    if body.on_drift == "retrain" and body.policy not in ("auto", "manual"):
        raise InvalidInput("policy must be auto or manual")
    dataset, version, label, task = _reference(session, proj, route, body, registry, caller)
    mon = Monitor(
        project_id=proj.id,
        route=body.route,
        reference_dataset=dataset,
        reference_version=version,
        label=label,
        task=task,
        window_seconds=body.window_seconds,
        schedule=body.schedule,
        drift_share=body.drift_share,
        on_drift=body.on_drift,
        policy=body.policy,
        webhook_url=body.webhook_url,
        flow_deployment=flow_name(body.route),
        created_by=caller.name,
    )
    session.add(mon)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"route {body.route!r} already has a monitor") from None
    _deploy_flow(pipelines, session, caller, project, mon)
    audit.record(
        session,
        caller.name,
        "monitor:create",
        project=project,
        target=f"monitor/{body.route}",
        detail={"reference": f"{dataset}@{version}", "schedule": body.schedule, "on_drift": body.on_drift},
    )
    session.commit()
    return monitor_public(session, mon)


def _deploy_flow(pipelines: Any, session: Session, caller: Caller, project: str, mon: Monitor) -> None:
    from selfserve.pipelines import service as pipes
    from selfserve.schemas.pipelines import BuiltinDeploy, Schedule

    body = BuiltinDeploy(
        flow="monitor",
        name=flow_name(mon.route),
        parameters={"route": mon.route},
        schedule=Schedule(cron=mon.schedule) if mon.schedule else None,
        description=f"Drift and quality of route {mon.route} against {mon.reference_dataset}@{mon.reference_version}.",
    )
    pipes.deploy_builtin(pipelines, session, caller, project, body)


def list_monitors(session: Session, caller: Caller, project: str) -> list[MonitorPublic]:
    proj, _ = authorize(session, caller, "monitor:read", project)
    rows = session.scalars(select(Monitor).where(Monitor.project_id == proj.id).order_by(Monitor.route))
    return [monitor_public(session, m) for m in rows]


def show(session: Session, caller: Caller, project: str, route: str) -> MonitorPublic:
    proj, _ = authorize(session, caller, "monitor:read", project)
    return monitor_public(session, _monitor(session, proj, route))


def delete(session: Session, caller: Caller, project: str, route: str, *, pipelines: Any) -> None:
    """Remove the monitor and its flow deployment; its runs go with it, its alerts stay."""
    from selfserve.pipelines import service as pipes

    proj, _ = authorize(session, caller, "monitor:write", project)
    mon = _monitor(session, proj, route)
    if mon.flow_deployment:
        with contextlib.suppress(NotFound):
            pipes.delete(pipelines, session, caller, project, mon.flow_deployment)
        session.flush()
    session.delete(mon)
    audit.record(session, caller.name, "monitor:delete", project=project, target=f"monitor/{route}")
    session.commit()


def run_now(session: Session, caller: Caller, project: str, route: str, *, pipelines: Any) -> str:
    """Start a run of the monitor's flow now; its flow run id."""
    from selfserve.pipelines import service as pipes

    proj, _ = authorize(session, caller, "monitor:write", project)
    mon = _monitor(session, proj, route)
    if not mon.flow_deployment:
        raise Conflict(f"the monitor of route {route!r} has no flow deployment")
    run = pipes.start_run(pipelines, session, caller, project, mon.flow_deployment, {})
    session.commit()
    return run.id


def list_runs(session: Session, caller: Caller, project: str, route: str, limit: int) -> list[MonitorRunPublic]:
    proj, _ = authorize(session, caller, "monitor:read", project)
    mon = _monitor(session, proj, route)
    rows = session.scalars(
        select(MonitorRun).where(MonitorRun.monitor_id == mon.id).order_by(MonitorRun.id.desc()).limit(limit)
    )
    return [run_public(r) for r in rows]


def report(session: Session, caller: Caller, project: str, route: str, run_id: int | None, object_store: Any) -> bytes:
    """The HTML report of a run (default the newest run that has one)."""
    proj, _ = authorize(session, caller, "monitor:read", project)
    mon = _monitor(session, proj, route)
    stmt = select(MonitorRun).where(MonitorRun.monitor_id == mon.id, MonitorRun.report_key.is_not(None))
    if run_id is not None:
        stmt = stmt.where(MonitorRun.id == run_id)
    run = session.scalar(stmt.order_by(MonitorRun.id.desc()).limit(1))
    if run is None or run.report_key is None:
        what = f"run {run_id}" if run_id is not None else "any run"
        raise NotFound(f"no report of {what} of the monitor on route {route!r}")
    return bytes(object_store.get_bytes(run.report_key))


# -- what a run found ----------------------------------------------------------------------------------


def record_run(
    session: Session,
    caller: Caller,
    project: str,
    route: str,
    body: MonitorRunRecord,
    *,
    settings: Settings,
    object_store: Any,
    on_drift: Any = None,
) -> MonitorRunPublic:
    """Keep a run's summary and report; raise an alert when drift reaches the threshold."""
    proj, _ = authorize(session, caller, "monitor:write", project)
    mon = _monitor(session, proj, route)
    html = body.html.encode() if body.html else None
    limit = settings.monitoring.max_report_bytes
    if html is not None and len(html) > limit:
        raise PayloadTooLarge(f"the report is {len(html)} bytes; at most {limit} (monitoring.max_report_bytes)")
    run = MonitorRun(
        monitor_id=mon.id,
        status=body.status,
        drift_share=body.drift_share,
        columns=body.columns,
        quality=body.quality,
        rows_reference=body.rows_reference,
        rows_current=body.rows_current,
        window_start=body.window_start,
        window_end=body.window_end,
        flow_run_id=body.flow_run_id,
        error=body.error,
    )
    session.add(run)
    session.flush()
    if html:
        key = report_key(project, route, run.id)
        object_store.put_bytes(key, html)
        run.report_key = key
    alert = None
    if body.status == "drift":
        drifted = sorted(c for c, v in body.columns.items() if v.get("drifted"))
        alert = Alert(
            project_id=proj.id,
            monitor_id=mon.id,
            run_id=run.id,
            route=route,
            kind="drift",
            message=f"drift on route {route}: {len(drifted)} of {len(body.columns)} columns drifted "
            f"(share {body.drift_share or 0:.2f} >= {mon.drift_share:.2f}): {', '.join(drifted[:10])}",
            detail={"drift_share": body.drift_share, "threshold": mon.drift_share, "drifted": drifted},
        )
        session.add(alert)
        session.flush()
    audit.record(
        session,
        caller.name,
        "monitor:run",
        project=project,
        target=f"monitor/{route}",
        detail={"run": run.id, "status": body.status, "drift_share": body.drift_share},
    )
    session.commit()
    if alert is not None:
        if mon.webhook_url:
            _send_webhook(settings, session.get_bind(), alert.id, mon.webhook_url, project, alert_public(alert))
        if on_drift is not None and mon.on_drift == "retrain":
            on_drift(proj.name, route, run.id)
    return run_public(run)


def _send_webhook(settings: Settings, bind: Any, alert_id: int, url: str, project: str, alert: AlertPublic) -> None:
    """POST the alert in the background; how it went is written on the alert. The address is checked
    again at send time: DNS may have changed since the monitor was created."""
    payload = {"project": project, **alert.model_dump(mode="json")}

    def send() -> None:
        try:
            check_webhook(settings, url)
            r = httpx.post(url, json=payload, timeout=settings.monitoring.webhook_timeout, follow_redirects=False)
            outcome = f"sent: {r.status_code}"
        except InvalidInput as e:
            outcome = f"refused: {e.message}"[:255]
        except httpx.HTTPError as e:
            outcome = f"failed: {type(e).__name__}"[:255]
        with Session(bind) as s:
            row = s.get(Alert, alert_id)
            if row is not None:
                row.webhook = outcome
                s.commit()

    threading.Thread(target=send, name="alert-webhook", daemon=True).start()


# -- alerts --------------------------------------------------------------------------------------------


def list_alerts(
    session: Session, caller: Caller, project: str, *, route: str | None, open_only: bool, limit: int
) -> list[AlertPublic]:
    proj, _ = authorize(session, caller, "monitor:read", project)
    stmt = select(Alert).where(Alert.project_id == proj.id)
    if route:
        stmt = stmt.where(Alert.route == route)
    if open_only:
        stmt = stmt.where(Alert.acknowledged_at.is_(None))
    return [alert_public(a) for a in session.scalars(stmt.order_by(Alert.id.desc()).limit(limit))]


def acknowledge(session: Session, caller: Caller, project: str, alert_id: int) -> AlertPublic:
    proj, _ = authorize(session, caller, "monitor:write", project)
    alert = session.get(Alert, alert_id)
    if alert is None or alert.project_id != proj.id:
        raise NotFound(f"alert {alert_id} not found in project {project!r}")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = datetime.now(UTC)
        alert.acknowledged_by = caller.name
    audit.record(session, caller.name, "monitor:ack", project=project, target=f"alert/{alert_id}")
    session.commit()
    return alert_public(alert)
