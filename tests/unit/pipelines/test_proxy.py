"""What a run may ask of Prefect through the runner proxy: its own flow run and nothing else."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from selfserve.pipelines.proxy import RunScope, Scopes, decide, decide_event, learn, learn_from_event


def fixed_id(name: str) -> str:
    """A stable id: test ids name them, and parallel workers must collect the same tests."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"selfserve-test:{name}"))


RUN, OTHER_RUN = fixed_id("run"), fixed_id("other-run")
DEPLOYMENT, FLOW, QUEUE, POOL = fixed_id("deployment"), fixed_id("flow"), fixed_id("queue"), "ss-demo"
TASK, OTHER_TASK, SUBFLOW = fixed_id("task"), fixed_id("other-task"), fixed_id("subflow")


@pytest.fixture
def scope() -> RunScope:
    s = RunScope(flow_run_id=RUN, deployment_id=DEPLOYMENT, flow_id=FLOW, work_queue_id=QUEUE, work_pool=POOL)
    s.task_runs.add(TASK)
    return s


ALLOWED: list[tuple[str, str, Any]] = [
    ("GET", "admin/version", None),
    ("GET", "/health/", None),
    ("GET", "csrf-token", None),
    ("GET", f"flow_runs/{RUN}", None),
    ("PATCH", f"flow_runs/{RUN}", {"flow_version": "1", "empirical_policy": {"retries": 2}}),
    ("POST", f"flow_runs/{RUN}/set_state", {"state": {"type": "RUNNING"}}),
    ("PATCH", f"flow_runs/{RUN}/labels", {"a": "b"}),
    ("POST", f"flow_runs/{RUN}/input", {"key": "k", "value": "v"}),
    ("POST", f"flow_runs/{RUN}/input/filter", {}),
    ("GET", f"flow_runs/{RUN}/input/k", None),
    ("POST", "flow_runs/filter", {"flow_runs": {"id": {"any_": [RUN]}}}),
    ("POST", "flow_runs/", {"flow_id": FLOW, "parent_task_run_id": TASK, "state": {"type": "PENDING"}}),
    ("POST", "task_runs", {"flow_run_id": RUN, "task_key": "t", "dynamic_key": "0"}),
    ("GET", f"task_runs/{TASK}", None),
    ("PATCH", f"task_runs/{TASK}", {"name": "t"}),
    ("POST", f"task_runs/{TASK}/set_state", {"state": {"type": "COMPLETED"}}),
    ("POST", "logs/", [{"flow_run_id": RUN, "message": "hi"}, {"flow_run_id": RUN, "task_run_id": TASK}]),
    ("POST", "logs", [{"flow_run_id": None, "task_run_id": TASK, "message": "from a task"}]),
    ("POST", "flows/", {"name": "a-subflow"}),
    ("GET", f"flows/{FLOW}", None),
    ("GET", f"deployments/{DEPLOYMENT}", None),
    ("GET", f"work_queues/{QUEUE}", None),
    ("GET", f"work_pools/{POOL}", None),
    ("POST", "artifacts/", {"flow_run_id": RUN, "type": "markdown", "data": "# hi"}),
]

REFUSED: list[tuple[str, str, Any]] = [
    # other runs, and everything of other runs
    ("GET", f"flow_runs/{OTHER_RUN}", None),
    ("PATCH", f"flow_runs/{OTHER_RUN}", {"name": "x"}),
    ("POST", f"flow_runs/{OTHER_RUN}/set_state", {"state": {"type": "CANCELLED"}}),
    ("GET", f"flow_runs/{OTHER_RUN}/input/k", None),
    ("POST", "flow_runs/filter", {"flow_runs": {"id": {"any_": [RUN, OTHER_RUN]}}}),
    ("POST", "flow_runs/filter", {}),
    ("POST", "flow_runs/filter", {"flow_runs": {"id": {"any_": []}}}),
    ("POST", "flow_runs/filter", {"deployments": {"id": {"any_": [DEPLOYMENT]}}}),
    ("POST", "flow_runs/filter", None),
    ("POST", "flow_runs/count", {}),
    ("GET", f"task_runs/{OTHER_TASK}", None),
    ("POST", f"task_runs/{OTHER_TASK}/set_state", {"state": {"type": "FAILED"}}),
    ("POST", "task_runs", {"flow_run_id": OTHER_RUN, "task_key": "t"}),
    ("POST", "task_runs", None),
    ("POST", "task_runs/filter", {}),
    ("POST", "logs", [{"flow_run_id": RUN}, {"flow_run_id": OTHER_RUN, "message": "forged"}]),
    ("POST", "logs", [{"flow_run_id": None, "task_run_id": OTHER_TASK}]),
    ("POST", "logs", {"flow_run_id": RUN}),
    ("POST", "logs/filter", {}),
    ("POST", "artifacts", {"flow_run_id": OTHER_RUN}),
    # subflows only of the run's own tasks, and never in a pool or by an existing run's key
    ("POST", "flow_runs", {"flow_id": FLOW}),
    ("POST", "flow_runs", {"flow_id": FLOW, "parent_task_run_id": OTHER_TASK}),
    ("POST", "flow_runs", {"flow_id": FLOW, "parent_task_run_id": TASK, "work_pool_name": "ss-other"}),
    ("POST", "flow_runs", {"flow_id": FLOW, "parent_task_run_id": TASK, "deployment_id": fixed_id("other-deployment")}),
    ("POST", "flow_runs", {"flow_id": FLOW, "parent_task_run_id": TASK, "idempotency_key": "scheduled x"}),
    ("POST", "flow_runs", {"flow_id": FLOW, "parent_task_run_id": TASK, "job_variables": {"env": {}}}),
    # the run's own flow run, but what the worker acts on
    ("PATCH", f"flow_runs/{RUN}", {"job_variables": {"env": {"SELFSERVE_PIPELINES__RUNNER_API_URL": "http://x"}}}),
    ("PATCH", f"flow_runs/{RUN}", {"infrastructure_pid": "host:1"}),
    ("PATCH", f"flow_runs/{RUN}", [1]),
    ("DELETE", f"flow_runs/{RUN}", None),
    ("POST", f"flow_runs/{RUN}/resume", {}),
    ("DELETE", f"flow_runs/{RUN}/input/k", None),
    ("GET", f"flow_runs/{RUN}/../../variables", None),
    ("GET", f"flow_runs/{RUN.upper()}", None),
    # the rest of Prefect
    ("GET", "variables", None),
    ("POST", "variables/filter", {}),
    ("POST", "deployments/filter", {}),
    ("GET", f"deployments/{fixed_id('other-deployment')}", None),
    ("POST", f"deployments/{DEPLOYMENT}/create_flow_run", {}),
    ("PATCH", f"deployments/{DEPLOYMENT}", {"paused": True}),
    ("DELETE", f"deployments/{DEPLOYMENT}", None),
    ("POST", f"work_pools/{POOL}/get_scheduled_flow_runs", {}),
    ("GET", "work_pools/ss-other", None),
    ("PATCH", f"work_pools/{POOL}", {"concurrency_limit": 100}),
    ("GET", f"work_queues/{fixed_id('other-queue')}", None),
    ("GET", f"flows/{fixed_id('other-flow')}", None),
    ("POST", "flows/filter", {}),
    ("DELETE", f"flows/{FLOW}", None),
    ("POST", "block_documents/filter", {}),
    ("GET", "block_documents/x", None),
    ("POST", "events/filter", {}),
    ("POST", "automations/", {}),
    ("POST", "admin/database/clear", None),
    ("GET", "", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ALLOWED, ids=[f"{m} {p}" for m, p, _ in ALLOWED])
def test_a_run_may_report_on_itself(scope: RunScope, method: str, path: str, body: Any) -> None:
    assert decide(scope, method, path, body) is None


@pytest.mark.parametrize(("method", "path", "body"), REFUSED, ids=[f"{m} {p}" for m, p, _ in REFUSED])
def test_everything_else_is_refused(scope: RunScope, method: str, path: str, body: Any) -> None:
    why = decide(scope, method, path, body)
    assert isinstance(why, str) and why


def test_reasons_say_what_is_wrong(scope: RunScope) -> None:
    assert decide(scope, "GET", f"flow_runs/{OTHER_RUN}", None) == "another run"
    assert decide(scope, "POST", "logs", [{"flow_run_id": OTHER_RUN}]) == "logs of another run"
    assert "subflow" in str(decide(scope, "POST", "flow_runs", {"parent_task_run_id": OTHER_TASK}))
    assert "job_variables" in str(decide(scope, "PATCH", f"flow_runs/{RUN}", {"job_variables": {}}))
    assert decide(scope, "GET", "variables", None) == "not available to runs"


@pytest.mark.parametrize(
    "body",
    [
        {"flow_runs": {"id": [RUN]}},
        {"flow_runs": {"id": {"any_": RUN}}},
        {"flow_runs": {"id": {"any_": {RUN: 1}}}},
        {"flow_runs": [RUN]},
        [RUN],
        "flow_runs",
    ],
)
def test_odd_filter_bodies_are_refused_not_crashed_on(scope: RunScope, body: Any) -> None:
    assert decide(scope, "POST", "flow_runs/filter", body) is not None


def test_a_scope_without_a_deployment_or_flow_grants_none(scope: RunScope) -> None:
    bare = RunScope(flow_run_id=RUN, deployment_id=None, flow_id=None)
    assert decide(bare, "GET", "deployments/None", None) is not None
    assert decide(bare, "GET", "flows/None", None) is not None
    assert decide(bare, "GET", "work_pools/None", None) is not None


def test_learn_remembers_the_task_and_subflow_runs_the_run_created(scope: RunScope) -> None:
    new_task, new_subflow = str(uuid.uuid4()), str(uuid.uuid4())
    assert decide(scope, "GET", f"task_runs/{new_task}", None) is not None
    learn(scope, "POST", "task_runs/", {"flow_run_id": RUN}, {"id": new_task})
    assert decide(scope, "POST", f"task_runs/{new_task}/set_state", {}) is None

    learn(scope, "POST", "flow_runs", {"parent_task_run_id": new_task}, {"id": new_subflow})
    assert decide(scope, "POST", f"flow_runs/{new_subflow}/set_state", {}) is None
    assert decide(scope, "POST", "logs", [{"flow_run_id": new_subflow}]) is None
    assert decide(scope, "POST", "flow_runs/filter", {"flow_runs": {"id": {"any_": [RUN, new_subflow]}}}) is None


@pytest.mark.parametrize(
    ("method", "path", "response"),
    [
        ("GET", "task_runs", {"id": OTHER_TASK}),  # not a creation
        ("POST", "task_runs/filter", {"id": OTHER_TASK}),  # not a creation
        ("POST", "task_runs", [{"id": OTHER_TASK}]),  # not one object
        ("POST", "task_runs", {"name": "no id"}),
        ("POST", "flows", {"id": OTHER_TASK}),  # a flow is not a run
    ],
)
def test_learn_ignores_everything_but_creations(scope: RunScope, method: str, path: str, response: Any) -> None:
    before = (set(scope.flow_runs), set(scope.task_runs))
    learn(scope, method, path, None, response)
    assert (scope.flow_runs, scope.task_runs) == before


def _task_event(task_run: str, flow_run: str, *, role: str = "flow-run", **extra: Any) -> dict[str, Any]:
    return {
        "event": "prefect.task-run.Running",
        "resource": {"prefect.resource.id": f"prefect.task-run.{task_run}", "prefect.resource.name": "t"},
        "related": [
            {"prefect.resource.id": f"prefect.flow-run.{flow_run}", "prefect.resource.role": role},
            {"prefect.resource.id": f"prefect.flow.{FLOW}", "prefect.resource.role": "flow"},
            {"prefect.resource.id": "prefect.tag.x", "prefect.resource.role": "tag"},
        ],
        **extra,
    }


def test_learn_from_event_remembers_the_runs_own_task_runs(scope: RunScope) -> None:
    new_task = str(uuid.uuid4())
    assert decide_event(scope, _task_event(new_task, RUN)) is None
    learn_from_event(scope, _task_event(new_task, RUN))
    assert new_task in scope.task_runs
    assert decide(scope, "POST", "logs", [{"task_run_id": new_task, "flow_run_id": None}]) is None


def test_learn_from_event_includes_tasks_of_subflows(scope: RunScope) -> None:
    scope.flow_runs.add(SUBFLOW)
    new_task = str(uuid.uuid4())
    learn_from_event(scope, _task_event(new_task, SUBFLOW))
    assert new_task in scope.task_runs


@pytest.mark.parametrize(
    "event",
    [
        _task_event(OTHER_TASK, OTHER_RUN),  # another run's task
        _task_event(OTHER_TASK, RUN, role="tag"),  # the run named, but not as the task's flow run
        {"resource": {"prefect.resource.id": f"prefect.flow-run.{RUN}"}},  # not a task run
        {"resource": {"prefect.resource.id": f"prefect.task-run.{OTHER_TASK}"}, "related": "x"},
        {"resource": "prefect.task-run.x"},
        ["not", "an", "event"],
        None,
    ],
)
def test_learn_from_event_learns_nothing_else(scope: RunScope, event: Any) -> None:
    before = set(scope.task_runs)
    learn_from_event(scope, event)
    assert scope.task_runs == before


def test_events_about_the_run_pass() -> None:
    scope = RunScope(flow_run_id=RUN, deployment_id=DEPLOYMENT, flow_id=FLOW)
    scope.task_runs.add(TASK)
    custom = {
        "event": "my.thing.happened",
        "resource": {"prefect.resource.id": "my.thing"},
        "related": [
            {"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.role": "flow-run"},
            {"prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}", "prefect.resource.role": "deployment"},
            {"prefect.resource.id": f"prefect.task-run.{TASK}", "prefect.resource.role": "task-run"},
        ],
    }
    assert decide_event(scope, custom) is None
    assert decide_event(scope, {"resource": {"prefect.resource.id": f"prefect.flow-run.{RUN}"}}) is None
    assert decide_event(scope, _task_event(str(uuid.uuid4()), RUN)) is None


@pytest.mark.parametrize(
    "event",
    [
        _task_event(str(uuid.uuid4()), OTHER_RUN),  # a task run recorded into another run
        # the run's flow run and another's in the same role: Prefect would record the task under the other
        {
            **_task_event(str(uuid.uuid4()), RUN),
            "related": [
                {"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.role": "flow-run"},
                {"prefect.resource.id": f"prefect.flow-run.{OTHER_RUN}", "prefect.resource.role": "flow-run"},
            ],
        },
        {"resource": {"prefect.resource.id": f"prefect.flow-run.{OTHER_RUN}"}},
        {"resource": {"prefect.resource.id": f"prefect.task-run.{OTHER_TASK}"}},  # no flow run: by id
        {
            "resource": {"prefect.resource.id": "my.thing"},
            "related": [
                {"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.role": "flow-run"},
                {"prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}", "prefect.resource.role": "x"},
            ],
        },
        {"resource": {"prefect.resource.id": "my.thing"}},  # relates to no run
        {"resource": {"prefect.resource.id": "my.thing"}, "related": [1]},
        {"resource": "x"},
        [1],
    ],
)
def test_events_about_anything_else_are_refused(event: Any) -> None:
    scope = RunScope(flow_run_id=RUN, deployment_id=DEPLOYMENT, flow_id=FLOW)
    assert decide_event(scope, event) is not None


def test_scopes_are_kept_by_token() -> None:
    scopes = Scopes()
    s = RunScope(flow_run_id=RUN, deployment_id=None, flow_id=None)
    scopes.put(7, s)
    assert scopes.get(7) is s and scopes.get(8) is None
    assert RUN in s.flow_runs  # a scope always holds its own run
