"""What a run may ask of Prefect through the platform.

A run's Prefect engine reports its states, task runs, logs and events. It does so through the
API's runner proxy with the run's own token, never with Prefect's credentials: each request is
checked against the one flow run the token was issued for (and the subflow runs it created).
Everything else of Prefect (other runs, deployments, pools, variables, blocks) is refused.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

_UUID = r"[0-9a-fA-F-]{36}"


@dataclass
class RunScope:
    """What one run's token may touch."""

    flow_run_id: str
    deployment_id: str | None
    flow_id: str | None
    work_queue_id: str | None = None
    work_pool: str | None = None
    flow_runs: set[str] = field(default_factory=set)
    task_runs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.flow_runs.add(self.flow_run_id)


class Scopes:
    """Run scopes by token id, kept for the life of the API process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, RunScope] = {}

    def get(self, token_id: str) -> RunScope | None:
        with self._lock:
            return self._by_token.get(token_id)

    def put(self, token_id: str, scope: RunScope) -> None:
        with self._lock:
            if len(self._by_token) > 10_000:
                self._by_token.clear()
            self._by_token[token_id] = scope


_OPEN = [
    ("GET", re.compile(r"admin/version")),
    ("GET", re.compile(r"health")),
    ("GET", re.compile(r"csrf-token")),
]
# What a run may change of its own flow run: what Prefect's engine sends. Never ``job_variables``
# (the worker's environment for the next attempt, e.g. the launcher's settings) nor
# ``infrastructure_pid`` (what the worker kills on cancellation).
_FLOW_RUN_UPDATE = {"name", "flow_version", "parameters", "tags", "empirical_policy"}
# Fields of a new flow run that would put it in a work pool or queue, or hand back an existing run
# (by idempotency key) that the run would then be allowed to report on.
_SUBFLOW_REFUSED = {
    "work_pool_name",
    "work_queue_name",
    "job_variables",
    "deployment_id",
    "idempotency_key",
    "infrastructure_document_id",
}


def _is_uuid(text: str) -> bool:
    return re.fullmatch(_UUID, text) is not None


def _filter_ids(body: Any) -> set[str] | None:
    """The ``flow_runs.id.any_`` of a flow run filter, or None when it has none."""
    flt = body.get("flow_runs") if isinstance(body, dict) else None
    by_id = flt.get("id") if isinstance(flt, dict) else None
    ids = by_id.get("any_") if isinstance(by_id, dict) else None
    if not isinstance(ids, list) or not ids:
        return None
    return {str(i) for i in ids}


def _flow_runs(scope: RunScope, method: str, parts: list[str], body: Any) -> str | None:
    if parts[1:] == ["filter"] and method == "POST":  # the engine watching its own run for suspension
        ids = _filter_ids(body)
        if ids is not None and ids <= scope.flow_runs:
            return None
        return "a run may only read its own flow runs"
    if len(parts) == 1 and method == "POST":  # a subflow run of one of this run's tasks
        if not isinstance(body, dict) or str(body.get("parent_task_run_id")) not in scope.task_runs:
            return "a run may only create subflow runs of its own tasks"
        refused = sorted(k for k in _SUBFLOW_REFUSED if body.get(k) is not None)
        if refused:
            return f"a subflow run may not set {', '.join(refused)}"
        return None
    if len(parts) < 2 or not _is_uuid(parts[1]):
        return "not available to runs"
    if parts[1] not in scope.flow_runs:
        return "another run"
    rest, n = parts[2:], len(parts)
    if n == 2 and method == "GET":
        return None
    if n == 2 and method == "PATCH":
        extra = sorted(set(body) - _FLOW_RUN_UPDATE) if isinstance(body, dict) else ["a non-object body"]
        return f"a run may not change {', '.join(extra)} of its flow run" if extra else None
    if rest == ["set_state"] and method == "POST":
        return None
    if rest == ["labels"] and method == "PATCH":
        return None
    # Inputs of a paused or suspended run (``pause_flow_run(wait_for_input=...)``).
    if rest == ["input"] and method == "POST":
        return None
    if rest == ["input", "filter"] and method == "POST":
        return None
    if n == 4 and rest[0] == "input" and method == "GET":
        return None
    return "not available to runs"


def _task_runs(scope: RunScope, method: str, parts: list[str], body: Any) -> str | None:
    if len(parts) == 1 and method == "POST":
        if isinstance(body, dict) and str(body.get("flow_run_id")) in scope.flow_runs:
            return None
        return "a task run must belong to this run"
    if len(parts) < 2 or not _is_uuid(parts[1]):
        return "not available to runs"
    if parts[1] not in scope.task_runs:
        return "another run's task"
    if len(parts) == 2 and method in ("GET", "PATCH"):
        return None
    if parts[2:] == ["set_state"] and method == "POST":
        return None
    return "not available to runs"


def _logs(scope: RunScope, body: Any) -> str | None:
    if not isinstance(body, list):
        return "logs are a list"
    for entry in body:
        if not isinstance(entry, dict):
            return "a log entry is an object"
        fr, tr = entry.get("flow_run_id"), entry.get("task_run_id")
        if fr is not None and str(fr) not in scope.flow_runs:
            return "logs of another run"
        if fr is None and tr is not None and str(tr) not in scope.task_runs:
            return "logs of another run's task"
    return None


def decide(scope: RunScope, method: str, path: str, body: Any) -> str | None:
    """Whether the run of ``scope`` may make this call of Prefect's API.

    Args:
        scope: What the run's token may touch.
        method: The HTTP method.
        path: The path below Prefect's API root (``flow_runs/<id>/set_state``), without a query.
        body: The request's JSON body, or None.

    Returns:
        None if the call may go on, else why not.
    """
    path = path.strip("/")
    for m, pattern in _OPEN:
        if method == m and pattern.fullmatch(path):
            return None
    parts = path.split("/")
    head, n = parts[0], len(parts)
    if head == "flow_runs":
        return _flow_runs(scope, method, parts, body)
    if head == "task_runs":
        return _task_runs(scope, method, parts, body)
    if head == "logs" and n == 1 and method == "POST":
        return _logs(scope, body)
    if head == "flows":
        if n == 1 and method == "POST":
            return None  # a subflow's flow, by name
        if n == 2 and method == "GET" and parts[1] == scope.flow_id:
            return None
        return "not available to runs"
    if n == 2 and method == "GET":
        own = {"work_queues": scope.work_queue_id, "work_pools": scope.work_pool, "deployments": scope.deployment_id}
        if head in own and own[head] is not None and parts[1] == own[head]:
            return None
    if head == "artifacts" and n == 1 and method == "POST":
        if isinstance(body, dict) and str(body.get("flow_run_id")) in scope.flow_runs:
            return None
        return "an artifact must belong to this run"
    return "not available to runs"


def learn(scope: RunScope, method: str, path: str, request_body: Any, response_body: Any) -> None:
    """Remember the task and subflow runs this run created, so it may report on them."""
    parts = path.strip("/").split("/")
    if method != "POST" or len(parts) != 1 or not isinstance(response_body, dict):
        return
    new_id = response_body.get("id")
    if new_id is None:
        return
    if parts[0] == "task_runs":
        scope.task_runs.add(str(new_id))
    elif parts[0] == "flow_runs":
        scope.flow_runs.add(str(new_id))


def _resource_id(resource: Any) -> str:
    return str(resource.get("prefect.resource.id") or "") if isinstance(resource, dict) else ""


def decide_event(scope: RunScope, event: Any) -> str | None:
    """Whether the run of ``scope`` may send this event to Prefect; None if it may, else why not.

    Prefect records task runs from their events, under the related resource in the ``flow-run``
    role. An event must relate to this run: every flow run it names is one of the run's, every
    task run it names is one of the run's (or the one it announces, in one of the run's flow
    runs), and a deployment it names is the run's.
    """
    if not isinstance(event, dict) or not isinstance(event.get("resource"), dict):
        return "an event is an object with a resource"
    subject = _resource_id(event["resource"])
    related = event.get("related") or []
    if not isinstance(related, list) or not all(isinstance(r, dict) for r in related):
        return "related resources are a list of objects"
    in_flow_runs = [
        _resource_id(r).removeprefix("prefect.flow-run.")
        for r in related
        if r.get("prefect.resource.role") == "flow-run"
    ]
    if any(fr not in scope.flow_runs for fr in in_flow_runs):
        return "an event about another run"
    ours = bool(in_flow_runs)
    for rid in [subject, *(_resource_id(r) for r in related)]:
        kind, _, ident = rid.rpartition(".")
        if kind == "prefect.flow-run":
            if ident not in scope.flow_runs:
                return "an event about another run"
            ours = True
        elif kind == "prefect.task-run":
            if ident not in scope.task_runs and not (rid == subject and in_flow_runs):
                return "an event about another run's task"
            ours = ours or ident in scope.task_runs
        elif kind == "prefect.deployment" and ident != scope.deployment_id:
            return "an event about another deployment"
    return None if ours else "an event must relate to this run"


def learn_from_event(scope: RunScope, event: Any) -> None:
    """Task runs of Prefect 3 are announced by events: remember those in this run's flow runs."""
    if not isinstance(event, dict):
        return
    rid = _resource_id(event.get("resource"))
    if not rid.startswith("prefect.task-run."):
        return
    related = event.get("related") or []
    if not isinstance(related, list):
        return
    for r in related:
        if (
            isinstance(r, dict)
            and r.get("prefect.resource.role") == "flow-run"
            and _resource_id(r).removeprefix("prefect.flow-run.") in scope.flow_runs
        ):
            scope.task_runs.add(rid.removeprefix("prefect.task-run."))
            return
