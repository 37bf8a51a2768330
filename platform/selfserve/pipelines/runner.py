"""The API's side of a run: what its launcher learns at start, heartbeats, the end, and lost runs.

A launcher (started by the worker for each flow run) calls :func:`start` with the platform's runner
key. The run gets a token of the project's service account, limited to the project and to the
run's lifetime; that token is all the run holds. It is revoked when the run ends or is found lost.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.data.objectstore import project_prefix
from selfserve.errors import InvalidInput, NotFound
from selfserve.pipelines import envs
from selfserve.pipelines.prefect import FINAL_STATES, Prefect
from selfserve.policy import quotas, tokens
from selfserve.policy.projects import service_account_name
from selfserve.settings import Settings, parse_duration
from selfserve.store.tables import FlowDeployment, PipelineRun, Principal, Project, Token

log = logging.getLogger(__name__)
# The launcher's own tail: time to start, report and stop beyond the run's timeout.
TOKEN_SLACK_SECONDS = 600


def _now() -> datetime:
    return datetime.now(UTC)


def start(session: Session, settings: Settings, prefect: Prefect, flow_run_id: str) -> dict[str, Any]:
    """Register the start (or a new attempt) of a run and hand its launcher what it needs.

    Raises:
        NotFound: the flow run, or the platform deployment it belongs to, does not exist.
    """
    fr = prefect.read_flow_run(flow_run_id)
    if fr is None or not fr.get("deployment_id"):
        raise NotFound(f"flow run {flow_run_id} is unknown to the pipeline engine")
    dep = session.scalar(select(FlowDeployment).where(FlowDeployment.prefect_id == str(fr["deployment_id"])))
    if dep is None:
        raise NotFound(f"flow run {flow_run_id} belongs to no platform deployment")
    proj = session.get(Project, dep.project_id)
    assert proj is not None
    limits = quotas.limits(session, proj)
    memory = int(limits["memory"]) if math.isfinite(limits["memory"]) else None
    cpus = max(1, min(math.ceil(limits["cpu"]), os.cpu_count() or 1))
    timeout = dep.timeout_seconds or parse_duration(settings.pipelines.max_run_time)
    svc = session.scalar(select(Principal).where(Principal.name == service_account_name(proj.name)))
    if svc is None:
        raise NotFound(f"project {proj.name!r} has no service account")
    max_ttl = parse_duration(settings.security.max_token_ttl)
    ttl = min(timeout + TOKEN_SLACK_SECONDS, max_ttl)
    token_row, token = tokens.issue(
        session, svc.id, name=f"run {flow_run_id[:8]}", kind="run", expires=f"{int(ttl)}s", project=proj
    )
    record = session.scalar(select(PipelineRun).where(PipelineRun.flow_run_id == flow_run_id))
    if record is None:
        record = PipelineRun(flow_run_id=flow_run_id, project_id=proj.id, deployment_id=dep.id)
        session.add(record)
    else:  # started again (a retry after a crash): the earlier credential ends now
        _revoke(session, record)
        record.attempt += 1
        record.finished_at = None
        record.note = None
        record.exit_code = None
    record.token_id = token_row.id
    record.started_at = record.heartbeat_at = _now()
    record.memory_limit_bytes = memory
    record.cpus = cpus
    policy = fr.get("empirical_policy") or {}
    if dep.retries and policy.get("retries") is None:
        prefect.update_flow_run(flow_run_id, {"empirical_policy": {**policy, "retries": dep.retries, "retry_delay": 5}})
    session.flush()
    python = None
    if dep.env_sha:
        if not envs.is_ready(settings, dep.env_sha):
            raise InvalidInput(f"the environment of deployment {dep.name!r} is missing; deploy it again")
        python = str(envs.python_of(settings, dep.env_sha))
    from selfserve.ml.access import run_env

    return {
        "project": proj.name,
        "deployment": dep.name,
        "token": token,
        "api_url": settings.runner_api_url,
        "code_sha": dep.code_sha,
        "python": python,
        "memory_bytes": memory,
        "cpus": cpus,
        "timeout_seconds": timeout,
        "heartbeat_seconds": settings.pipelines.heartbeat_seconds,
        "storage_prefix": project_prefix(proj.name),
        # The service account's own MLflow account (None when models are off): the run's MLFLOW_* variables.
        "mlflow": run_env(session, settings, proj.name, svc),
    }


def _record(session: Session, flow_run_id: str) -> PipelineRun:
    record = session.scalar(select(PipelineRun).where(PipelineRun.flow_run_id == flow_run_id))
    if record is None:
        raise NotFound(f"run {flow_run_id} was not started through the platform")
    return record


def heartbeat(session: Session, flow_run_id: str, cpu_seconds: float, rss_bytes: int) -> None:
    record = _record(session, flow_run_id)
    record.heartbeat_at = _now()
    record.cpu_seconds = max(record.cpu_seconds, cpu_seconds)
    record.max_rss_bytes = max(record.max_rss_bytes, rss_bytes)


def finish(
    session: Session, flow_run_id: str, *, cpu_seconds: float, max_rss_bytes: int, exit_code: int, note: str | None
) -> None:
    """Record the end of a run's process: CPU-seconds go to the project's usage; its token is revoked."""
    record = _record(session, flow_run_id)
    if record.finished_at is not None:
        return
    added = max(cpu_seconds, 0.0)
    record.cpu_seconds = max(record.cpu_seconds, cpu_seconds)
    record.max_rss_bytes = max(record.max_rss_bytes, max_rss_bytes)
    record.exit_code = exit_code
    record.note = note
    record.finished_at = _now()
    quotas.add_usage(session, record.project, "cpu_seconds", added)
    _revoke(session, record)


def _revoke(session: Session, record: PipelineRun) -> None:
    if record.token_id is None:
        return
    token = session.get(Token, record.token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = _now()
        tokens.cache.clear()


def reconcile(session: Session, settings: Settings, prefect: Prefect) -> list[str]:
    """Mark runs whose launcher stopped reporting as crashed; returns their ids."""
    cutoff = _now() - timedelta(seconds=settings.pipelines.lost_after)
    lost = session.scalars(
        select(PipelineRun).where(PipelineRun.finished_at.is_(None), PipelineRun.heartbeat_at < cutoff)
    ).all()
    ended = []
    for record in lost:
        note = (
            f"the run's process stopped reporting for {settings.pipelines.lost_after:g} s "
            "(its worker or launcher was lost); marked crashed"
        )
        fr = prefect.read_flow_run(record.flow_run_id)
        if fr is not None and fr["state"]["type"] not in FINAL_STATES:
            prefect.set_state(record.flow_run_id, "CRASHED", note)
        elif fr is not None:
            note = None  # it ended on its own; only its launcher's report is missing
        record.finished_at = _now()
        record.note = note
        _revoke(session, record)
        ended.append(record.flow_run_id)
    return ended


def run_of_token(session: Session, token_id: int) -> PipelineRun | None:
    """The unfinished run a token was issued to, if any."""
    return session.scalar(
        select(PipelineRun).where(PipelineRun.token_id == token_id, PipelineRun.finished_at.is_(None))
    )
