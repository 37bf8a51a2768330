"""What a run may use and reach, on the real stack: the project's quotas (memory, CPU, concurrent
runs), the deployment's timeout, its isolation from other projects, the platform and Prefect;
cancelling; environments from requirements; schedules.

Runs are slow to start (Prefect's engine imports for seconds), so the runs that only need checking
afterwards start together when the module starts, and their tests wait for them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfserve import Client
from selfserve.data._landlock import abi_version
from selfserve.errors import InvalidInput
from selfserve.pipelines.prefect import Prefect, pool_name
from selfserve.schemas.pipelines import RunPublic
from tests.integration.pipelines._stack import admin_client, eventually, log_text, run_pids, wait_state
from tests.pipeline_stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # runs start slowly on a busy machine

RUN_TIMEOUT = 240.0  # from "run" to an end; a busy machine makes Prefect's engine slow to start
FINAL = {"completed", "failed", "crashed", "cancelled"}

PROBE = """
import os
import time
from pathlib import Path

import httpx
from prefect import flow, get_run_logger

from selfserve import Client
from selfserve.errors import SelfServeError


@flow
def probe(
    burn: float = 0.0,
    hog_mb: int = 0,
    nap: float = 0.0,
    other_project: str = "",
    other_run: str = "",
    paths: list[str] | None = None,
    upload: bool = False,
) -> None:
    log = get_run_logger()
    end = time.process_time() + burn
    while time.process_time() < end:
        pass
    if hog_mb:
        block = b"x" * (hog_mb * 2**20)
        log.info("allocated %s bytes", len(block))
    time.sleep(nap)
    log.info("cpus=%s", len(os.sched_getaffinity(0)))
    own = os.environ["SELFSERVE_PROJECT"]
    with Client() as client:
        log.info("own datasets: %s", ",".join(d.name for d in client.datasets.list(own)))
        if other_project:
            try:
                client.datasets.list(other_project)
                log.info("other project: allowed")
            except SelfServeError as e:
                log.info("other project: %s", type(e).__name__)
        if upload:
            rows = Path("rows.csv")
            rows.write_text("id\\n1\\n")
            try:
                client.datasets.upload(own, "uploaded", rows)
                log.info("upload: ok")
            except Exception as e:
                log.info("upload: %s: %s", type(e).__name__, e)
    for p in [__file__, *(paths or [])]:
        try:
            Path(p).read_bytes()
            log.info("read %s: allowed", p)
        except OSError as e:
            log.info("read %s: %s", p, type(e).__name__)
    user, _, password = os.environ["PREFECT_API_AUTH_STRING"].partition(":")
    with httpx.Client(base_url=os.environ["PREFECT_API_URL"] + "/", auth=(user, password)) as prefect:
        own_run = os.environ["PREFECT__FLOW_RUN_ID"]
        log.info("prefect own run: %s", prefect.get(f"flow_runs/{own_run}").status_code)
        log.info("prefect deployments: %s", prefect.post("deployments/filter", json={}).status_code)
        if other_run:
            log.info("prefect other run: %s", prefect.get(f"flow_runs/{other_run}").status_code)
"""

SIX = """
import six
from prefect import flow, get_run_logger


@flow
def sixer() -> None:
    get_run_logger().info("six=%s", six.__version__)
"""


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_log(client: Client, project: str, run_id: str, text: str, timeout: float = 30) -> str:
    """The run's log once it holds ``text`` (the last lines reach Prefect shortly after the run ends)."""
    return eventually(
        lambda: log if text in (log := log_text(client, project, run_id)) else None,
        timeout=timeout,
        what=f"{text!r} in the log of run {run_id}",
    )


def final_run(client: Client, project: str, run_id: str) -> RunPublic:
    return client.runs.wait(project, run_id, timeout=RUN_TIMEOUT)


def reported(client: Client, project: str, run_id: str) -> RunPublic:
    """The ended run of a one-run project once its launcher's last report (CPU, peak memory) is in."""
    final_run(client, project, run_id)

    def finished() -> RunPublic | None:
        usage = {u.resource: u.amount for u in client.quotas.usage(project).items}
        return client.runs.get(project, run_id) if "cpu_seconds" in usage else None

    return eventually(finished, timeout=30, what=f"the launcher's report of run {run_id}")


@dataclass
class Batch:
    """Runs started together when the module starts, checked by the tests below."""

    client: Client
    home: Path
    projects: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)

    def run(self, key: str) -> tuple[str, str]:
        """(project, run id) of the batch's run ``key``."""
        return self.projects[key], self.runs[key]


@pytest.fixture(scope="module", autouse=True)
def batch(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    d = tmp_path_factory.mktemp("limits-flows")
    probe = d / "probe.py"
    probe.write_text(PROBE)
    rows = d / "rows.csv"
    rows.write_text("id\n1\n")
    lim, hog, iso = new_name("lim"), new_name("hog"), new_name("iso")
    with admin_client(stack) as admin:
        b = Batch(client=admin, home=stack.settings.home)
        b.projects = {"burn": lim, "slow": lim, "hog": hog, "iso": iso}
        for name, limits in ((lim, {"cpu": 1}), (hog, {"memory": "300MB"}), (iso, {"cpu": 2})):
            admin.projects.create(name)
            admin.quotas.set(name, limits)
        admin.datasets.upload(lim, "theirs", rows)
        admin.datasets.upload(iso, "mine", rows)

        def deploy(args: tuple[str, str, float | None]) -> None:
            project, name, timeout = args
            with admin_client(stack) as c:
                c.flows.deploy(project, probe, "probe", name=name, timeout=timeout)

        jobs = [(lim, "probe", None), (lim, "slow", 3), (hog, "probe", None), (iso, "probe", None)]
        with ThreadPoolExecutor(len(jobs)) as pool:  # each deploy imports the flow in a child: in parallel
            list(pool.map(deploy, jobs))
        b.runs["burn"] = admin.flows.run(lim, "probe", parameters={"burn": 2.0}).id
        b.runs["slow"] = admin.flows.run(lim, "slow", parameters={"nap": 60}).id
        b.runs["hog"] = admin.flows.run(hog, "probe", parameters={"hog_mb": 700, "nap": 30}).id
        platform_files = [str(stack.settings.home / "selfserve.db"), str(stack.settings.home / "secret.key")]
        iso_probe = {"other_project": lim, "other_run": b.runs["burn"], "paths": platform_files, "upload": True}
        b.runs["iso"] = admin.flows.run(iso, "probe", parameters=iso_probe).id
        yield b


@pytest.fixture
def admin(pipeline_env: Stack, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("SELFSERVE_TIMEOUT", "300")  # deploy checks import Prefect: slow on a busy machine
    return pipeline_env.admin()


@pytest.fixture
def project(admin: Client) -> Callable[[str], str]:
    """Make projects for a test. They stay: deleting one would also delete its tokens (see the last test)."""

    def make(prefix: str = "p") -> str:
        name = new_name(prefix)
        admin.projects.create(name)
        return name

    return make


def flow_file(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- limits ---------------------------------------------------------------------------------------


def test_a_run_over_its_memory_quota_is_crashed(batch: Batch) -> None:
    project, run_id = batch.run("hog")
    done = final_run(batch.client, project, run_id)
    assert done.state == "crashed", done
    assert done.message and "over its memory limit" in done.message, done.message
    assert done.memory_limit_bytes == 300_000_000
    run = reported(batch.client, project, run_id)
    assert run.max_rss_bytes is not None and run.max_rss_bytes > 300_000_000


def test_cpu_seconds_are_shown_on_the_run_and_added_to_the_project_usage(batch: Batch) -> None:
    project, run_id = batch.run("burn")
    assert final_run(batch.client, project, run_id).state == "completed"
    final_run(batch.client, project, batch.runs["slow"])  # the project's other run

    def accounted() -> list[RunPublic] | None:
        # Both launchers have reported when the project's usage is the sum of its runs' CPU-seconds.
        runs = batch.client.runs.list(project)
        usage = {u.resource: u.amount for u in batch.client.quotas.usage(project).items}
        spent = sum(r.cpu_seconds or 0 for r in runs)
        return runs if spent > 0 and usage.get("cpu_seconds") == pytest.approx(spent) else None

    runs = eventually(accounted, timeout=30, what="the project's cpu_seconds to be its runs'")
    burn = next(r for r in runs if r.id == run_id)
    assert burn.cpu_seconds is not None and burn.cpu_seconds >= 2.0, burn
    assert burn.max_rss_bytes is not None and burn.max_rss_bytes > 10 * 2**20, burn


def test_a_run_past_its_deployment_timeout_fails(batch: Batch) -> None:
    project, run_id = batch.run("slow")
    done = final_run(batch.client, project, run_id)
    assert done.state == "failed", done
    assert done.message and "timeout of 3 s" in done.message, done.message
    assert done.start_time and done.end_time and (done.end_time - done.start_time).total_seconds() < 40


def test_a_run_is_pinned_to_its_quota_of_cpus(batch: Batch) -> None:
    project, run_id = batch.run("burn")
    assert final_run(batch.client, project, run_id).state == "completed"
    assert "cpus=1" in wait_log(batch.client, project, run_id, "cpus=")
    assert batch.client.runs.get(project, run_id).cpus == 1
    two = min(2, len(os.sched_getaffinity(0)))
    project, run_id = batch.run("iso")
    assert final_run(batch.client, project, run_id).state == "completed"
    assert f"cpus={two}" in wait_log(batch.client, project, run_id, "cpus=")
    assert batch.client.runs.get(project, run_id).cpus == two


# -- isolation ------------------------------------------------------------------------------------


def iso_log(batch: Batch) -> str:
    project, run_id = batch.run("iso")
    done = final_run(batch.client, project, run_id)
    assert done.state == "completed", (done, log_text(batch.client, project, run_id))
    return wait_log(batch.client, project, run_id, "prefect own run:")


def test_a_run_reaches_its_own_project_and_not_another_through_the_sdk(batch: Batch) -> None:
    log = iso_log(batch)
    assert "own datasets: mine" in log
    assert "other project: NotFound" in log


def test_a_run_may_upload_through_the_sdk(batch: Batch) -> None:
    """The SDK's multipart upload guesses a content type from /etc/mime.types, which the run must read."""
    log = iso_log(batch)
    assert "upload: ok" in log, [line for line in log.splitlines() if line.startswith("upload:")]


@pytest.mark.skipif(abi_version() == 0, reason="the kernel has no Landlock")
def test_a_run_cannot_read_the_platform_home(batch: Batch) -> None:
    log = iso_log(batch)
    for name in ("selfserve.db", "secret.key"):
        path = batch.home / name
        assert path.is_file()
        assert f"read {path}: PermissionError" in log
    assert "probe.py: allowed" in log  # its own code, in its working directory


def test_a_run_reaches_only_its_own_run_in_prefect(batch: Batch) -> None:
    log = iso_log(batch)
    assert "prefect own run: 200" in log
    assert "prefect deployments: 403" in log
    assert "prefect other run: 403" in log


# -- concurrency ----------------------------------------------------------------------------------


def test_the_runs_quota_makes_a_second_run_wait_and_sets_the_pool_limit(
    admin: Client, project: Callable[[str], str], tmp_path: Path, pipeline_env: Stack
) -> None:
    name = project("one")
    admin.quotas.set(name, {"runs": 1})
    prefect = Prefect.from_settings(pipeline_env.settings)
    try:
        assert prefect.read_pool(pool_name(name))["concurrency_limit"] == 1  # type: ignore[index]
        admin.flows.deploy(name, flow_file(tmp_path, "probe.py", PROBE), "probe", name="nap", parameters={"nap": 2})
        first, second = admin.flows.run(name, "nap"), admin.flows.run(name, "nap")
        active = {"pending", "running", "cancelling"}
        held_back = False
        deadline = time.monotonic() + 2 * RUN_TIMEOUT
        while True:
            a, b = admin.runs.get(name, first.id), admin.runs.get(name, second.id)
            states = {a.state, b.state}
            assert not states <= active, f"both runs are active at once with a runs quota of 1: {a}, {b}"
            if states & active and states & {"waiting", "scheduled"}:
                held_back = True
            if states <= FINAL or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert a.state == b.state == "completed", (a, b)
        assert held_back, "one run should have waited while the other ran"
        earlier, later = sorted((a, b), key=lambda r: r.start_time or r.created_at)
        assert earlier.end_time and later.start_time and later.start_time >= earlier.end_time

        admin.quotas.set(name, {"runs": 3})
        assert prefect.read_pool(pool_name(name))["concurrency_limit"] == 3  # type: ignore[index]
    finally:
        prefect.close()


# -- cancel ---------------------------------------------------------------------------------------


def test_cancelling_a_running_run_ends_it_and_its_processes(
    admin: Client, project: Callable[[str], str], tmp_path: Path
) -> None:
    name = project("cancel")
    admin.flows.deploy(name, flow_file(tmp_path, "probe.py", PROBE), "probe", name="nap", parameters={"nap": 60})
    run = admin.flows.run(name, "nap")
    wait_state(admin, name, run.id, {"running"}, timeout=RUN_TIMEOUT)
    assert run_pids(run.id), "the run's launcher and engine should be running"
    admin.runs.cancel(name, run.id)
    done = admin.runs.wait(name, run.id, timeout=60)
    assert done.state == "cancelled", done
    eventually(lambda: not run_pids(run.id), timeout=30, what="the cancelled run's processes to end")
    assert done.end_time and done.start_time and (done.end_time - done.start_time).total_seconds() < 50


# -- requirements ---------------------------------------------------------------------------------


def test_a_requirement_that_cannot_be_resolved_is_refused_at_deploy(
    admin: Client, project: Callable[[str], str], tmp_path: Path
) -> None:
    name = project("req")
    reqs = flow_file(tmp_path, "requirements.txt", "this-package-does-not-exist-zz==9.9\n")
    with pytest.raises(InvalidInput, match="could not be installed") as raised:
        admin.flows.deploy(name, flow_file(tmp_path, "sixer.py", SIX), "sixer", name="six", requirements=reqs)
    assert "this-package-does-not-exist-zz" in raised.value.message  # uv's own words
    assert admin.flows.list(name) == []


def test_equal_requirements_share_one_environment_that_runs_the_flow(
    admin: Client, project: Callable[[str], str], tmp_path: Path
) -> None:
    import six

    assert six.__version__ != "1.16.0", "the platform's own six must differ for this test to tell envs apart"
    name = project("req")
    flow = flow_file(tmp_path, "sixer.py", SIX)
    one = flow_file(tmp_path, "one.txt", "six==1.16.0\n")
    two = flow_file(tmp_path, "two.txt", "# the same, written differently\nsix == 1.16.0\n")
    first = admin.flows.deploy(name, flow, "sixer", name="one", requirements=one)
    second = admin.flows.deploy(name, flow, "sixer", name="two", requirements=two)
    assert first.env_sha is not None and first.env_sha == second.env_sha
    run = admin.flows.run(name, "two")
    done = final_run(admin, name, run.id)
    assert done.state == "completed", (done, log_text(admin, name, run.id))
    assert "six=1.16.0" in wait_log(admin, name, run.id, "six=")


# -- schedules ------------------------------------------------------------------------------------


def test_an_interval_schedule_makes_runs_until_paused(
    admin: Client, project: Callable[[str], str], tmp_path: Path
) -> None:
    name = project("tick")
    admin.flows.deploy(name, flow_file(tmp_path, "probe.py", PROBE), "probe", name="tick", interval=5)

    def completed() -> list[RunPublic] | None:
        done = admin.runs.list(name, state="completed")
        return done if len(done) >= 2 else None

    done = eventually(completed, timeout=2 * RUN_TIMEOUT, what="two scheduled runs to complete", poll=1)
    starts = sorted(r.expected_start_time for r in done if r.expected_start_time)
    assert len(starts) >= 2 and (starts[-1] - starts[0]).total_seconds() >= 5

    assert admin.flows.pause(name, "tick").paused
    # Nothing the schedule made is left to start: not the future runs, nor a backlog already due.
    left = [r for r in admin.runs.list(name, limit=200) if r.state in ("scheduled", "waiting")]
    assert left == [], left
    in_flight = {r.id for r in admin.runs.list(name, limit=200) if r.state not in FINAL}
    time.sleep(12)  # two intervals
    after = admin.runs.list(name, limit=200)
    assert {r.id for r in after if r.state not in FINAL} <= in_flight
    assert not [r for r in after if r.state in ("scheduled", "waiting")]


# -- after a project is deleted ---------------------------------------------------------------------


def test_a_run_after_a_project_was_deleted_reaches_its_own_run(
    admin: Client, project: Callable[[str], str], tmp_path: Path
) -> None:
    """Deleting a project deletes its tokens; on SQLite the next token issued may get the id of the
    last one deleted, and the run holding it must still reach its own run in Prefect, not the old one."""
    gone, kept = project("gone"), project("kept")
    flow = flow_file(tmp_path, "probe.py", PROBE)
    for name in (gone, kept):
        admin.flows.deploy(name, flow, "probe", name="probe")
    first = admin.flows.run(gone, "probe")
    assert final_run(admin, gone, first.id).state == "completed"
    admin.projects.delete(gone)
    run = admin.flows.run(kept, "probe")
    done = final_run(admin, kept, run.id)
    assert done.state == "completed", (done, log_text(admin, kept, run.id))
