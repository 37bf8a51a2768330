"""Pipelines as users see them: deployments of built-in and own flows, runs, logs.

Every call authorizes first; Prefect is reached only through :class:`~selfserve.pipelines.prefect.Prefect`
with the platform's credentials, and only for the caller's own project's pool and deployments.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.data.objectstore import ObjectStore
from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.pipelines import check, code, envs
from selfserve.pipelines.prefect import ACTIVE_STATES, Prefect, PrefectError, parse_time, pool_name
from selfserve.policy import audit, quotas
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.data import IngestRequest, TransformRequest
from selfserve.schemas.monitoring import MonitorRequest
from selfserve.schemas.pipelines import (
    BuiltinDeploy,
    FlowDeploymentPublic,
    LogLine,
    RunLogs,
    RunPublic,
    Schedule,
)
from selfserve.schemas.training import TrainRequest
from selfserve.settings import Settings, parse_duration
from selfserve.store.tables import FlowDeployment, PipelineRun, Project

BUILTIN_ENTRYPOINTS = {
    "ingest": "ingest.py:ingest",
    "transform": "transform.py:transform",
    "train": "train.py:train",
    "monitor": "monitor.py:monitor",
}
BUILTIN_REQUESTS: dict[
    str, type[IngestRequest] | type[TransformRequest] | type[TrainRequest] | type[MonitorRequest]
] = {
    "ingest": IngestRequest,
    "transform": TransformRequest,
    "train": TrainRequest,
    "monitor": MonitorRequest,
}
# What deploying a built-in takes besides flow:write: its runs act as the project's service account,
# so the deployer must be allowed what they do (a train run registers and promotes models).
BUILTIN_ACTIONS = {
    "ingest": ("dataset:write",),
    "transform": ("dataset:write",),
    "train": ("dataset:read", "experiment:write", "model:write", "model:promote"),
    "monitor": ("dataset:read", "monitor:write"),
}
# Pull step for every platform deployment: the launcher has already put the code in the working directory.
PULL_STEPS = [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]


class Pipelines:
    """The pipelines adapter held by the API: settings, storage, and a lazily made Prefect client."""

    def __init__(self, settings: Settings, objects: ObjectStore) -> None:
        self.settings = settings
        self.objects = objects
        self._prefect: Prefect | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.pipelines.enabled

    @property
    def prefect(self) -> Prefect:
        if not self.enabled:
            raise ServiceUnavailable("pipelines are not enabled on this platform (setting pipelines.enabled)")
        if self._prefect is None:
            self._prefect = Prefect.from_settings(self.settings)
        return self._prefect

    def close(self) -> None:
        if self._prefect is not None:
            self._prefect.close()

    def nudge_worker(self) -> None:
        """Wake the worker so a run just created starts now rather than at its next round. Best effort,
        off the request's path: a worker that does not answer still finds the run when it next asks."""
        url = f"{self.settings.worker_url}/nudge"
        headers = {"Authorization": f"Bearer {self.settings.runner_key()}"}

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, headers=headers, timeout=2.0)

        threading.Thread(target=send, name="nudge-worker", daemon=True).start()

    @property
    def scratch(self) -> Path:
        return self.settings.home / "pipelines" / "scratch"


# -- deployments ----------------------------------------------------------------------------------


def public(dep: FlowDeployment) -> FlowDeploymentPublic:
    return FlowDeploymentPublic(
        name=dep.name,
        kind=dep.kind,  # type: ignore[arg-type]
        flow_name=dep.flow_name,
        entrypoint=dep.entrypoint,
        code_sha=dep.code_sha,
        env_sha=dep.env_sha,
        schedule=Schedule(**dep.schedule) if dep.schedule else None,
        parameters=dep.parameters,
        retries=dep.retries,
        timeout_seconds=dep.timeout_seconds,
        paused=dep.paused,
        description=dep.description,
        created_by=dep.created_by,
        created_at=dep.created_at,
        updated_at=dep.updated_at,
    )


def get(session: Session, proj: Project, name: str) -> FlowDeployment:
    dep = session.scalar(
        select(FlowDeployment).where(FlowDeployment.project_id == proj.id, FlowDeployment.name == name)
    )
    if dep is None:
        raise NotFound(f"flow deployment {name!r} not found in project {proj.name!r}")
    return dep


def list_deployments(session: Session, caller: Caller, project: str) -> list[FlowDeploymentPublic]:
    proj, _ = authorize(session, caller, "flow:read", project)
    rows = session.scalars(
        select(FlowDeployment).where(FlowDeployment.project_id == proj.id).order_by(FlowDeployment.name)
    )
    return [public(d) for d in rows]


def show(session: Session, caller: Caller, project: str, name: str) -> FlowDeploymentPublic:
    proj, _ = authorize(session, caller, "flow:read", project)
    return public(get(session, proj, name))


def _prefect_schedules(schedule: Schedule | None) -> list[dict[str, Any]]:
    if schedule is None:
        return []
    if schedule.cron is not None:
        spec: dict[str, Any] = {"cron": schedule.cron, "timezone": schedule.timezone}
    else:
        spec = {"interval": schedule.interval_seconds, "timezone": schedule.timezone}
    return [{"schedule": spec, "active": True}]


def _check_parameters(given: dict[str, Any], schema: dict[str, Any], *, scheduled: bool) -> None:
    props = schema.get("properties") or {}
    unknown = sorted(set(given) - set(props))
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s) {', '.join(unknown)}; the flow takes: {', '.join(sorted(props)) or 'none'}"
        )
    if scheduled:
        missing = sorted(set(schema.get("required") or []) - set(given))
        if missing:
            raise InvalidInput(f"a scheduled run needs a value for required parameter(s): {', '.join(missing)}")


def _upsert(
    pipelines: Pipelines,
    session: Session,
    caller: Caller,
    proj: Project,
    *,
    name: str,
    kind: str,
    flow_name: str,
    entrypoint: str,
    code_sha: str,
    env_sha: str | None,
    parameters: dict[str, Any],
    parameter_schema: dict[str, Any],
    schedule: Schedule | None,
    retries: int,
    timeout_seconds: float | None,
    description: str,
) -> FlowDeployment:
    prefect = pipelines.prefect
    dep = session.scalar(
        select(FlowDeployment).where(FlowDeployment.project_id == proj.id, FlowDeployment.name == name)
    )
    if dep is not None and dep.kind != kind:
        raise Conflict(f"{name!r} is already a {dep.kind} deployment in project {proj.name!r}; delete it first")
    prefect.ensure_pool(pool_name(proj.name), _pool_limit(session, proj))
    flow_id = prefect.ensure_flow(flow_name)
    body = {
        "name": f"{proj.name}.{name}",
        "flow_id": flow_id,
        "work_pool_name": pool_name(proj.name),
        "entrypoint": entrypoint,
        "path": None,
        "pull_steps": PULL_STEPS,
        "parameters": parameters,
        "parameter_openapi_schema": parameter_schema,
        "enforce_parameter_schema": False,
        "schedules": _prefect_schedules(schedule),
        "paused": dep.paused if dep is not None else False,
        "tags": [f"project:{proj.name}"],
        "description": description or None,
        "job_variables": {},
    }
    try:
        created = prefect.upsert_deployment(body)
    except PrefectError as e:
        if " 422 " in str(e):
            raise InvalidInput(f"the pipeline engine refused the deployment: {str(e).split(' 422 ', 1)[1]}") from None
        raise
    if dep is None:
        dep = FlowDeployment(project_id=proj.id, name=name, kind=kind, created_by=caller.name)
        session.add(dep)
    old_prefect_id = dep.prefect_id
    dep.flow_name = flow_name
    dep.entrypoint = entrypoint
    dep.code_sha = code_sha
    dep.env_sha = env_sha
    dep.prefect_id = str(created["id"])
    dep.schedule = schedule.model_dump() if schedule else None
    dep.parameters = parameters
    dep.retries = retries
    dep.timeout_seconds = timeout_seconds
    dep.description = description
    dep.updated_at = datetime.now(UTC)
    session.flush()
    if old_prefect_id and old_prefect_id != dep.prefect_id:
        prefect.delete_deployment(old_prefect_id)  # the flow's name changed: the old one is replaced
    audit.record(
        session,
        caller.name,
        "flow:deploy",
        project=proj.name,
        target=f"flow/{name}",
        detail={"kind": kind, "entrypoint": entrypoint, "code": code_sha[:12], "schedule": dep.schedule},
    )
    return dep


def _pool_limit(session: Session, proj: Project) -> int:
    return max(int(quotas.limits(session, proj)["runs"]), 0)


def deploy_code(
    pipelines: Pipelines,
    session: Session,
    caller: Caller,
    project: str,
    *,
    name: str,
    entrypoint: str,
    archive: bytes,
    requirements: str | None,
    parameters: dict[str, Any],
    schedule: Schedule | None,
    retries: int,
    timeout_seconds: float | None,
    description: str,
) -> FlowDeploymentPublic:
    """Deploy the project's own flow from a zip of its code (checked, imported in a confined child)."""
    proj, _ = authorize(session, caller, "flow:write", project)
    pipelines.prefect  # noqa: B018 - refuse (503) before any work when pipelines are off
    settings = pipelines.settings
    check.split_entrypoint(entrypoint)
    code.check_zip(archive, max_bytes=settings.pipelines.max_code_bytes)
    quotas.check(session, proj, "storage", len(archive))
    env_sha = None
    python = sys.executable
    if requirements is not None:
        env_sha = envs.build(settings, envs.normalise(requirements))
        python = str(envs.python_of(settings, env_sha))
    work = code.scratch_dir(pipelines.scratch)
    try:
        code.unpack(archive, work)
        described = check.describe(settings, work, entrypoint, python)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _check_parameters(parameters, described["parameters"], scheduled=schedule is not None)
    sha = code.store_code(pipelines.objects, proj.name, archive)
    quotas.add_usage(session, proj, "storage", len(archive))
    dep = _upsert(
        pipelines,
        session,
        caller,
        proj,
        name=name,
        kind="user",
        flow_name=described["name"],
        entrypoint=entrypoint,
        code_sha=sha,
        env_sha=env_sha,
        parameters=parameters,
        parameter_schema=described["parameters"],
        schedule=schedule,
        retries=retries,
        timeout_seconds=timeout_seconds,
        description=description or described.get("description", ""),
    )
    return public(dep)


def builtin_code(pipelines: Pipelines, project: str) -> str:
    """Store the built-in flows in the project's storage (once per version of them); returns the hash."""
    archive = code.builtin_zip(pipelines.settings.pipelines.flows_dir)
    return code.store_code(pipelines.objects, project, archive)


def deploy_builtin(
    pipelines: Pipelines, session: Session, caller: Caller, project: str, body: BuiltinDeploy
) -> FlowDeploymentPublic:
    """Deploy a built-in flow with fixed parameters, checked now rather than at run time."""
    proj, _ = authorize(session, caller, "flow:write", project)
    for action in BUILTIN_ACTIONS[body.flow]:
        authorize(session, caller, action, project)
    request_model = BUILTIN_REQUESTS[body.flow]
    try:
        request = request_model.model_validate(body.parameters)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise InvalidInput(f"invalid {body.flow} parameters: {where}: {first['msg']}") from None
    if isinstance(request, IngestRequest):
        from selfserve.data import sources

        if (request.table is None) == (request.query is None):
            raise InvalidInput("invalid ingest parameters: give exactly one of table or query")
        sources.get(session, proj, request.source)
    elif isinstance(request, TrainRequest):
        _check_train(session, proj, request)
        if not pipelines.settings.models.enabled:
            raise ServiceUnavailable("models are not enabled on this platform (setting models.enabled)")
    elif isinstance(request, MonitorRequest):
        from selfserve.store.tables import Monitor

        if not session.scalar(select(Monitor.id).where(Monitor.project_id == proj.id, Monitor.route == request.route)):
            raise InvalidInput(f"invalid monitor parameters: no monitor on route {request.route!r}")
    elif (request.sql is None) == (request.polars is None):
        raise InvalidInput("invalid transform parameters: give exactly one of sql or polars")
    pipelines.prefect  # noqa: B018 - refuse (503) before any work when pipelines are off
    parameters = {"project": proj.name, "request": request.model_dump(mode="json", exclude_defaults=True)}
    schema = {
        "type": "object",
        "properties": {"project": {"type": "string"}, "request": {"type": "object"}},
        "required": ["project", "request"],
    }
    dep = _upsert(
        pipelines,
        session,
        caller,
        proj,
        name=body.name,
        kind="builtin",
        flow_name=f"selfserve-{body.flow}",
        entrypoint=BUILTIN_ENTRYPOINTS[body.flow],
        code_sha=builtin_code(pipelines, proj.name),
        env_sha=None,
        parameters=parameters,
        parameter_schema=schema,
        schedule=body.schedule,
        retries=body.retries,
        timeout_seconds=body.timeout_seconds,
        description=body.description or f"built-in {body.flow}",
    )
    return public(dep)


def _check_train(session: Session, proj: Project, request: TrainRequest) -> None:
    """The dataset (version) exists and has the columns named, so a scheduled run does not fail on them."""
    from selfserve.data import datasets

    ds = datasets.get(session, proj, request.dataset.name)
    if request.dataset.version is None and ds.current_version is None:
        raise InvalidInput(f"invalid train parameters: dataset {ds.name!r} has no version yet")
    columns = [str(c["name"]) for c in datasets.version_row(session, ds, request.dataset.version).columns]
    named = [request.target, *(request.features or []), *request.exclude]
    missing = [c for c in dict.fromkeys(named) if c not in columns]
    if missing:
        raise InvalidInput(
            f"invalid train parameters: column(s) {', '.join(map(repr, missing))} not in dataset {ds.name!r}; "
            f"its columns are: {', '.join(columns)}"
        )


def set_paused(
    pipelines: Pipelines, session: Session, caller: Caller, project: str, name: str, paused: bool
) -> FlowDeploymentPublic:
    proj, _ = authorize(session, caller, "flow:write", project)
    dep = get(session, proj, name)
    if dep.prefect_id:
        pipelines.prefect.set_paused(dep.prefect_id, paused)
    dep.paused = paused
    audit.record(
        session, caller.name, "flow:pause" if paused else "flow:resume", project=project, target=f"flow/{name}"
    )
    return public(dep)


def delete(pipelines: Pipelines, session: Session, caller: Caller, project: str, name: str) -> None:
    proj, _ = authorize(session, caller, "flow:write", project)
    dep = get(session, proj, name)
    if dep.prefect_id:
        pipelines.prefect.delete_deployment(dep.prefect_id)
    session.delete(dep)
    audit.record(session, caller.name, "flow:delete", project=project, target=f"flow/{name}")


# -- runs -----------------------------------------------------------------------------------------


def run_public(fr: dict[str, Any], names: dict[str, str], record: PipelineRun | None, *, busy: bool) -> RunPublic:
    state = fr.get("state") or {}
    state_type = str(state.get("type") or "SCHEDULED")
    public_state = state_type.lower()
    message = state.get("message")
    expected = parse_time(fr.get("expected_start_time"))
    if state_type == "SCHEDULED" and expected is not None and expected <= datetime.now(UTC) and busy:
        public_state = "waiting"
        message = "waiting for a free run slot (the project's concurrent runs quota is in use)"
    note = record.note if record else None
    if note and state_type in ("CRASHED", "FAILED", "CANCELLED"):
        message = note
    start, end = parse_time(fr.get("start_time")), parse_time(fr.get("end_time"))
    duration = fr.get("total_run_time") if end else None
    if duration is None and start is not None and end is None and state_type == "RUNNING":
        duration = (datetime.now(UTC) - start).total_seconds()
    return RunPublic(
        id=str(fr["id"]),
        name=str(fr.get("name") or ""),
        deployment=names.get(str(fr.get("deployment_id"))),
        flow_name=None,
        state=public_state,  # type: ignore[arg-type]
        state_name=str(state.get("name") or state_type.title()),
        message=message,
        parameters=fr.get("parameters") or {},
        created_at=parse_time(fr.get("created")) or datetime.now(UTC),
        expected_start_time=expected,
        start_time=start,
        end_time=end,
        duration_seconds=float(duration) if duration is not None else None,
        run_count=int(fr.get("run_count") or 0),
        cpu_seconds=record.cpu_seconds if record else None,
        max_rss_bytes=record.max_rss_bytes if record else None,
        memory_limit_bytes=record.memory_limit_bytes if record else None,
        cpus=record.cpus if record else None,
        note=note,
    )


def _deployment_names(session: Session, proj: Project) -> dict[str, str]:
    rows = session.execute(
        select(FlowDeployment.prefect_id, FlowDeployment.name).where(FlowDeployment.project_id == proj.id)
    )
    return {str(pid): name for pid, name in rows if pid}


def _records(session: Session, ids: list[str]) -> dict[str, PipelineRun]:
    if not ids:
        return {}
    rows = session.scalars(select(PipelineRun).where(PipelineRun.flow_run_id.in_(ids)))
    return {r.flow_run_id: r for r in rows}


def _busy(pipelines: Pipelines, session: Session, proj: Project, names: dict[str, str]) -> bool:
    limit = _pool_limit(session, proj)
    active = pipelines.prefect.count_flow_runs(deployment_ids=list(names), states=sorted(ACTIVE_STATES))
    return active >= limit


STATE_FILTER = {
    "scheduled": ["SCHEDULED"],
    "waiting": ["SCHEDULED"],
    "pending": ["PENDING"],
    "running": ["RUNNING"],
    "completed": ["COMPLETED"],
    "failed": ["FAILED"],
    "crashed": ["CRASHED"],
    "cancelling": ["CANCELLING"],
    "cancelled": ["CANCELLED"],
    "paused": ["PAUSED"],
}


def list_runs(
    pipelines: Pipelines,
    session: Session,
    caller: Caller,
    project: str,
    *,
    state: str | None = None,
    flow: str | None = None,
    limit: int = 50,
) -> list[RunPublic]:
    proj, _ = authorize(session, caller, "flow:read", project)
    names = _deployment_names(session, proj)
    ids = list(names)
    if flow is not None:
        dep = get(session, proj, flow)
        ids = [dep.prefect_id] if dep.prefect_id else []
    if state is not None and state not in STATE_FILTER:
        raise InvalidInput(f"unknown state {state!r}; states are: {', '.join(STATE_FILTER)}")
    runs = pipelines.prefect.flow_runs(deployment_ids=ids, states=STATE_FILTER[state] if state else None, limit=limit)
    records = _records(session, [str(r["id"]) for r in runs])
    busy = _busy(pipelines, session, proj, names) if any(r["state"]["type"] == "SCHEDULED" for r in runs) else False
    out = [run_public(r, names, records.get(str(r["id"])), busy=busy) for r in runs]
    if state in ("waiting", "scheduled"):
        out = [r for r in out if r.state == state]
    return out


def _own_run(pipelines: Pipelines, session: Session, proj: Project, run_id: str) -> dict[str, Any]:
    """The flow run ``run_id`` if it belongs to ``proj``'s pool; 404 otherwise (never another project's)."""
    try:
        uuid.UUID(run_id)
    except ValueError:
        raise NotFound(f"run {run_id!r} not found in project {proj.name!r}") from None
    fr = pipelines.prefect.read_flow_run(run_id)
    if fr is None or fr.get("work_pool_name") != pool_name(proj.name):
        raise NotFound(f"run {run_id!r} not found in project {proj.name!r}")
    return fr


def show_run(pipelines: Pipelines, session: Session, caller: Caller, project: str, run_id: str) -> RunPublic:
    proj, _ = authorize(session, caller, "flow:read", project)
    fr = _own_run(pipelines, session, proj, run_id)
    names = _deployment_names(session, proj)
    busy = _busy(pipelines, session, proj, names) if fr["state"]["type"] == "SCHEDULED" else False
    return run_public(fr, names, _records(session, [run_id]).get(run_id), busy=busy)


def run_logs(
    pipelines: Pipelines,
    session: Session,
    caller: Caller,
    project: str,
    run_id: str,
    *,
    after: datetime | None = None,
    limit: int = 500,
) -> RunLogs:
    proj, _ = authorize(session, caller, "flow:read", project)
    fr = _own_run(pipelines, session, proj, run_id)
    names = _deployment_names(session, proj)
    logs = pipelines.prefect.logs(run_id, after=after, limit=limit)
    if after is not None:  # Prefect's filter includes lines at exactly `after`: those were read already
        logs = [row for row in logs if (parse_time(row["timestamp"]) or after) > after]
    lines = [
        LogLine(
            time=parse_time(row["timestamp"]) or datetime.now(UTC),
            level=_level(int(row.get("level") or 20)),
            message=str(row.get("message") or ""),
            source=str(row.get("name") or ""),
        )
        for row in logs
    ]
    run = run_public(fr, names, _records(session, [run_id]).get(run_id), busy=False)
    return RunLogs(run=run, lines=lines, next_after=lines[-1].time if lines else after)


def _level(n: int) -> str:
    return {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(n, str(n))


def start_run(
    pipelines: Pipelines, session: Session, caller: Caller, project: str, name: str, parameters: dict[str, Any]
) -> RunPublic:
    proj, _ = authorize(session, caller, "flow:run", project)
    dep = get(session, proj, name)
    if not dep.prefect_id:
        raise Conflict(f"flow deployment {name!r} is not deployed to the engine; deploy it again")
    if dep.kind == "builtin" and parameters:
        raise InvalidInput("built-in flow deployments run with the parameters they were deployed with")
    merged = {**dep.parameters, **parameters}
    pipelines.prefect.ensure_pool(pool_name(proj.name), _pool_limit(session, proj))
    fr = pipelines.prefect.create_flow_run(
        dep.prefect_id, merged, retries=dep.retries, tags=[f"project:{proj.name}", f"by:{caller.name}"]
    )
    audit.record(session, caller.name, "flow:run", project=project, target=f"flow/{name}", detail={"run": fr["id"]})
    pipelines.nudge_worker()
    return run_public(fr, {dep.prefect_id: dep.name}, None, busy=False)


def cancel_run(pipelines: Pipelines, session: Session, caller: Caller, project: str, run_id: str) -> RunPublic:
    proj, _ = authorize(session, caller, "flow:run", project)
    fr = _own_run(pipelines, session, proj, run_id)
    state = fr["state"]["type"]
    if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        raise Conflict(f"run {run_id} has already ended ({state.lower()})")
    if state in ("SCHEDULED", "PAUSED"):
        pipelines.prefect.set_state(run_id, "CANCELLED", f"cancelled by {caller.name}")
    else:
        pipelines.prefect.set_state(run_id, "CANCELLING", f"cancelled by {caller.name}", force=True)
    audit.record(session, caller.name, "flow:cancel", project=project, target=f"run/{run_id}")
    return show_run(pipelines, session, caller, project, run_id)


def parse_timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    if value <= 0:
        raise InvalidInput("timeout must be more than 0")
    return value
