"""Deploying and running flows on a real Prefect server and the platform's worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from selfserve.errors import InvalidInput, NotFound
from tests.pipeline_stack import Stack

pytestmark = pytest.mark.integration

ETL = """
import os
from prefect import flow, task, get_run_logger

@task
def double(x: int) -> int:
    return 2 * x

@flow
def etl(days: int = 7) -> int:
    log = get_run_logger()
    total = sum(double(i) for i in range(days))
    log.info("total=%s", total)
    log.info("env=%s", ",".join(sorted(os.environ)))
    return total
"""

FAILS = """
from prefect import flow

@flow
def broken():
    raise ValueError("the source table is empty")
"""


def logged(client: Any, project: str, run_id: str, needle: str, timeout: float = 60) -> list[str]:
    """The run's log lines once one contains ``needle`` (the last lines arrive shortly after the final state)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line.message for line in client.runs.logs(project, run_id).lines]
        if any(needle in m for m in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    return p


def test_deploy_and_run_a_flow(pipeline_env: Stack, flow_dir: Path) -> None:
    admin = pipeline_env.admin()
    project = pipeline_env.project(admin)
    dep = admin.flows.deploy(project, write(flow_dir, "etl.py", ETL), "etl", name="nightly", parameters={"days": 3})
    assert dep.flow_name == "etl" and dep.parameters == {"days": 3} and dep.kind == "user"
    run = admin.flows.run(project, "nightly", parameters={"days": 4})
    done = admin.runs.wait(project, run.id, timeout=120)
    assert done.state == "completed", done
    lines = logged(admin, project, run.id, "env=")
    assert "total=12" in lines
    env_line = next(m for m in lines if m.startswith("env="))
    names = set(env_line.removeprefix("env=").split(","))
    # The run holds its project's token and scope, and Prefect's address only through the platform.
    assert {"SELFSERVE_TOKEN", "SELFSERVE_URL", "SELFSERVE_PROJECT"} <= names
    assert not any(n.startswith(("SELFSERVE_SECRET", "SELFSERVE_DATABASE", "SELFSERVE_STORAGE__")) for n in names)
    assert "PREFECT_SERVER_API_AUTH_STRING" not in names
    runs = admin.runs.list(project)
    assert [r.id for r in runs] == [run.id]
    assert done.deployment == "nightly"


def test_a_failing_flow_is_failed_with_its_error_in_the_logs(pipeline_env: Stack, flow_dir: Path) -> None:
    admin = pipeline_env.admin()
    project = pipeline_env.project(admin)
    admin.flows.deploy(project, write(flow_dir, "broken.py", FAILS), "broken", name="broken")
    run = admin.flows.run(project, "broken")
    done = admin.runs.wait(project, run.id, timeout=120)
    assert done.state == "failed"
    text = "\n".join(logged(admin, project, run.id, "the source table is empty"))
    assert "the source table is empty" in text
    assert admin.runs.list(project, state="failed")[0].id == run.id


def test_deploy_refuses_code_that_does_not_import_or_is_not_a_flow(pipeline_env: Stack, flow_dir: Path) -> None:
    admin = pipeline_env.admin()
    project = pipeline_env.project(admin)
    bad = write(flow_dir, "bad.py", "import not_a_module_anywhere\n")
    with pytest.raises(InvalidInput, match="does not import: ModuleNotFoundError"):
        admin.flows.deploy(project, bad, "etl", name="bad")
    plain = write(flow_dir, "plain.py", "def etl():\n    return 1\n")
    with pytest.raises(InvalidInput, match="is not a flow"):
        admin.flows.deploy(project, plain, "etl", name="plain")
    etl = write(flow_dir, "etl.py", ETL)
    with pytest.raises(InvalidInput, match="unknown parameter"):
        admin.flows.deploy(project, etl, "etl", name="etl", parameters={"weeks": 1})
    assert admin.flows.list(project) == []


def test_other_projects_runs_are_invisible(pipeline_env: Stack, flow_dir: Path) -> None:
    admin = pipeline_env.admin()
    a, b = pipeline_env.project(admin), pipeline_env.project(admin)
    admin.flows.deploy(a, write(flow_dir, "etl.py", ETL), "etl", name="nightly", parameters={"days": 1})
    run = admin.flows.run(a, "nightly")
    with pytest.raises(NotFound):
        admin.runs.get(b, run.id)
    with pytest.raises(NotFound):
        admin.runs.cancel(b, run.id)
    admin.runs.wait(a, run.id, timeout=120)
