"""Faults of the pipeline engine on a platform of this module's own: a worker killed in the middle of
a run, and a Prefect server restarted. (A flow that raises is covered in test_flows.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selfserve.pipelines.prefect import Prefect
from tests.integration.pipelines._stack import OwnStack, eventually, log_text, own_stack, run_pids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # runs start slowly on a busy machine

LOST_AFTER = 4.0

# ``mimetypes.knownfiles.clear()``: the SDK's upload reads /etc/mime.types, which the run's Landlock
# rules do not allow yet (test_limits.py::test_a_run_may_upload_through_the_sdk); not this module's subject.
WRITER = """
import mimetypes
import os
import time
from pathlib import Path

from prefect import flow, get_run_logger

from selfserve import Client


@flow
def writer(dataset: str, pause: float = 0.0) -> None:
    log = get_run_logger()
    mimetypes.knownfiles.clear()
    project = os.environ["SELFSERVE_PROJECT"]
    with Client() as client:
        first = Path("first.csv")
        first.write_text("id,v\\n1,a\\n2,b\\n")
        client.datasets.upload(project, dataset, first)
        log.info("first version written")
        time.sleep(pause)
        second = Path("second.csv")
        second.write_text("id,v\\n3,c\\n")
        client.datasets.upload(project, dataset, second)
        log.info("second version written")
"""


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnStack]:
    with own_stack(tmp_path_factory.mktemp("faults-home"), SELFSERVE_PIPELINES__LOST_AFTER=f"{LOST_AFTER:g}") as stack:
        yield stack


@pytest.fixture
def fault_stack(faults: OwnStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnStack]:
    """The module's stack with every service up (mended if an earlier test left one dead)."""
    for k, v in faults.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SELFSERVE_TIMEOUT", "300")  # deploy checks import Prefect: slow on a busy machine
    faults.mend()
    yield faults
    faults.close_clients()


def test_a_killed_worker_crashes_its_run_and_a_new_worker_runs_the_next(fault_stack: OwnStack, tmp_path: Path) -> None:
    admin = fault_stack.admin()
    project = fault_stack.project(admin)
    flow = tmp_path / "writer.py"
    flow.write_text(WRITER)
    admin.flows.deploy(project, flow, "writer", name="writer", parameters={"dataset": "events"})
    run = admin.flows.run(project, "writer", parameters={"pause": 60})
    eventually(
        lambda: "first version written" in log_text(admin, project, run.id),
        timeout=240,
        what="the run to write its first version",
    )
    launched = run_pids(run.id)
    assert launched, "the run's launcher and engine should be running"

    fault_stack.kill("worker")

    # The launcher and the run's process die with the worker; nothing is left to finish the write.
    eventually(lambda: not run_pids(run.id), timeout=10, what=f"the run's processes {launched} to end")
    done = admin.runs.wait(project, run.id, timeout=LOST_AFTER + 60)
    assert done.state == "crashed", done
    assert done.message and "stopped reporting" in done.message, done.message
    versions = admin.datasets.history(project, "events")
    assert len(versions) == 1 and versions[0].rows == 2, f"the crashed run must leave no new version: {versions}"
    assert "second version written" not in log_text(admin, project, run.id)

    fault_stack.restart("worker")
    again = admin.flows.run(project, "writer")
    finished = admin.runs.wait(project, again.id, timeout=240)
    assert finished.state == "completed", finished
    assert len(admin.datasets.history(project, "events")) == 3


def test_prefect_restarted_keeps_deployments_and_schedules(fault_stack: OwnStack, tmp_path: Path) -> None:
    admin = fault_stack.admin()
    project = fault_stack.project(admin)
    flow = tmp_path / "writer.py"
    flow.write_text(WRITER)
    admin.flows.deploy(project, flow, "writer", name="yearly", parameters={"dataset": "t"}, cron="0 0 1 1 *")
    admin.flows.deploy(project, flow, "writer", name="adhoc", parameters={"dataset": "t"})
    dep = admin.flows.get(project, "yearly")

    fault_stack.kill("prefect", group=True)
    fault_stack.restart("prefect")

    assert {d.name for d in admin.flows.list(project)} == {"yearly", "adhoc"}
    prefect = Prefect.from_settings(fault_stack.settings)
    try:
        # Prefect names a deployment by its flow and "<project>.<name>".
        yearly = prefect.request("GET", f"deployments/name/writer/{project}.yearly")
        assert prefect.request("GET", f"deployments/name/writer/{project}.adhoc", ok404=True) is not None
        schedules = prefect.schedules(str(yearly["id"]))
    finally:
        prefect.close()
    assert [s["schedule"].get("cron") for s in schedules] == ["0 0 1 1 *"]
    assert all(s["active"] for s in schedules)
    assert admin.flows.get(project, "yearly").schedule == dep.schedule

    run = admin.flows.run(project, "adhoc")
    done = admin.runs.wait(project, run.id, timeout=240)
    assert done.state == "completed", done
    assert len(admin.datasets.history(project, "t")) == 2
