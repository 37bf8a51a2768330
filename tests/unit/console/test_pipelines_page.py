"""The console's Pipelines page, run in-process with Streamlit's AppTest against a live API.

The unit suite runs without a Prefect server (pipelines are off), so the first test reads the API's real 503.
The others swap the SDK client's ``flows`` and ``runs`` for :class:`FakePipelines`, a small stand-in for the
Prefect engine that returns the SDK's real schema objects; login, projects and roles still come from the live
API. The real engine behind this page is driven in ``tests/browser/test_pipelines_page.py`` and the
integration suites.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from selfserve.errors import Conflict, SelfServeError
from selfserve.schemas.pipelines import FlowDeploymentPublic, LogLine, RunLogs, RunPublic, Schedule
from tests.unit.console.test_app import (  # noqa: F401  (api_url and start_app are fixtures)
    PASSWORDS,
    SESSION_CLIENT,
    StartApp,
    api_url,
    login,
    sign_in,
    start_app,
    texts,
)

PAGE = "views/pipelines.py"
NOW = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
FINAL = {"completed", "failed", "crashed", "cancelled"}


def deployment(name: str, **fields: Any) -> FlowDeploymentPublic:
    values: dict[str, Any] = {
        "name": name,
        "kind": "user",
        "flow_name": "etl",
        "entrypoint": "etl.py:etl",
        "code_sha": "c0de",
        "env_sha": None,
        "schedule": None,
        "parameters": {},
        "retries": 0,
        "timeout_seconds": None,
        "paused": False,
        "description": "",
        "created_by": "alice",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return FlowDeploymentPublic(**{**values, **fields})


def run(name: str, dep: str, state: str, **fields: Any) -> RunPublic:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "deployment": dep,
        "flow_name": None,
        "state": state,
        "state_name": state.title(),
        "message": None,
        "parameters": {},
        "created_at": NOW,
        "expected_start_time": NOW,
        "start_time": None,
        "end_time": None,
        "duration_seconds": None,
        "run_count": 1,
    }
    return RunPublic(**{**values, **fields})


class FakePipelines:
    """Stands in for the Prefect engine behind ``client.flows`` and ``client.runs``: the same methods,
    the SDK's schema objects, and runs that change state only when a test says so."""

    def __init__(self) -> None:
        self.deployments = {
            "nightly": deployment(
                "nightly", schedule=Schedule(cron="0 2 * * *"), parameters={"days": 7}, timeout_seconds=3600
            ),
            "hourly-ingest": deployment(
                "hourly-ingest",
                kind="builtin",
                flow_name="ingest",
                entrypoint="selfserve.pipelines.builtin:ingest",
                schedule=Schedule(interval_seconds=3600),
                paused=True,
            ),
        }
        done = run(
            "brisk-otter",
            "nightly",
            "completed",
            start_time=NOW,
            end_time=NOW + timedelta(seconds=75),
            duration_seconds=75.0,
            cpu_seconds=12.345,
            max_rss_bytes=256_000_000,
            memory_limit_bytes=2_000_000_000,
        )
        broken = run(
            "sad-heron",
            "hourly-ingest",
            "failed",
            start_time=NOW + timedelta(hours=1),
            duration_seconds=2.5,
            message="Flow run encountered an exception",
            note="the source 'orders' is not reachable",
        )
        planned = run("next-nightly", "nightly", "scheduled", expected_start_time=datetime.now(UTC) + timedelta(days=1))
        self.runs = [planned, broken, done]
        self.logs = {
            done.id: [LogLine(time=NOW, level="INFO", message="total=42", source="prefect.flow_runs")],
            broken.id: [LogLine(time=NOW, level="ERROR", message="ConnectionRefusedError", source="prefect")],
        }
        self.refusal: SelfServeError | None = None  # what the next start is refused with, if anything
        self.flows = _Flows(self)
        self.runs_client = _Runs(self)

    def install(self, at: AppTest, monkeypatch: pytest.MonkeyPatch) -> AppTest:
        """Put the fake into the logged-in session's SDK client and rerun the page."""
        client = at.session_state[SESSION_CLIENT]
        monkeypatch.setattr(client, "flows", self.flows)
        monkeypatch.setattr(client, "runs", self.runs_client)
        return at

    def start(self, dep: str) -> RunPublic:
        if self.refusal is not None:
            raise self.refusal
        new = run(f"run-{len(self.runs)}", dep, "scheduled", expected_start_time=datetime.now(UTC))
        self.runs.append(new)
        return new

    def named(self, name: str) -> RunPublic:
        return next(r for r in self.runs if r.name == name)

    def set(self, run_id: str, **fields: Any) -> RunPublic:
        i = next(i for i, r in enumerate(self.runs) if r.id == run_id)
        self.runs[i] = self.runs[i].model_copy(update=fields)
        return self.runs[i]


class _Flows:
    def __init__(self, engine: FakePipelines) -> None:
        self.engine = engine

    def list(self, project: str) -> list[FlowDeploymentPublic]:
        return sorted(self.engine.deployments.values(), key=lambda d: d.name)

    def run(self, project: str, name: str) -> RunPublic:
        return self.engine.start(name)

    def pause(self, project: str, name: str) -> FlowDeploymentPublic:
        return self._paused(name, True)

    def resume(self, project: str, name: str) -> FlowDeploymentPublic:
        return self._paused(name, False)

    def _paused(self, name: str, paused: bool) -> FlowDeploymentPublic:
        self.engine.deployments[name] = self.engine.deployments[name].model_copy(update={"paused": paused})
        return self.engine.deployments[name]


class _Runs:
    def __init__(self, engine: FakePipelines) -> None:
        self.engine = engine

    def list(
        self, project: str, *, state: str | None = None, flow: str | None = None, limit: int = 50
    ) -> list[RunPublic]:
        found = [r for r in self.engine.runs if state in (None, r.state) and flow in (None, r.deployment)]
        return sorted(found, key=lambda r: r.expected_start_time or r.created_at, reverse=True)[:limit]

    def logs(self, project: str, run_id: str, *, limit: int = 200) -> RunLogs:
        lines = self.engine.logs.get(run_id, [])[:limit]
        current = next(r for r in self.engine.runs if r.id == run_id)
        return RunLogs(run=current, lines=lines, next_after=lines[-1].time if lines else None)

    def cancel(self, project: str, run_id: str) -> RunPublic:
        current = next(r for r in self.engine.runs if r.id == run_id)
        if current.state in FINAL:
            raise Conflict(f"run {run_id} has already ended ({current.state})")
        return self.engine.set(run_id, state="cancelled", state_name="Cancelled", message="cancelled by alice")


@pytest.fixture
def carol_views_churn(api_url: str) -> str:  # noqa: F811  (the fixture imported above)
    with login(api_url, "alice") as alice:
        alice.members.add("churn", "carol", "viewer")
    return api_url


def open_pipelines(
    at: AppTest, engine: FakePipelines | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> AppTest:
    if engine is not None and monkeypatch is not None:
        engine.install(at, monkeypatch)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.main.button]


def frame(at: AppTest, column: str) -> Any:
    """The page's dataframe that has ``column``, as pandas (a Styler's data, as the page styles its tables)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


# -- without a pipeline engine ------------------------------------------------------------------------


def test_disabled_pipelines_are_an_info_not_an_error(start_app: StartApp) -> None:  # noqa: F811
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert at.title[0].value.endswith("Pipelines")
    info = texts(at.info)
    assert "Pipelines are not available on this platform right now" in info
    assert "pipelines are not enabled on this platform" in info
    assert not at.error
    assert not at.dataframe
    assert "Run now" not in buttons(at)


# -- with the stand-in engine -------------------------------------------------------------------------


def test_deployments_show_their_schedule_in_words_and_last_run(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]), FakePipelines(), monkeypatch)
    deployments = frame(at, "Schedule").set_index("Deployment")
    assert deployments.loc["nightly", "Schedule"] == "cron 0 2 * * * (UTC)"
    assert deployments.loc["hourly-ingest", "Schedule"] == "every 1h"
    assert deployments.loc["nightly", "Last run"] == "completed"
    assert deployments.loc["hourly-ingest", "Last run"] == "failed"
    assert deployments.loc["hourly-ingest", "Kind"] == "builtin"
    assert bool(deployments.loc["hourly-ingest", "Paused"]) and not bool(deployments.loc["nightly", "Paused"])
    assert deployments.loc["nightly", "Timeout"] == "1h"
    # The next run is the planned one, not shown as the last; a paused deployment has none.
    assert deployments.loc["nightly", "Next run"] > pd.Timestamp.now(tz="UTC")
    assert pd.isna(deployments.loc["hourly-ingest", "Next run"])


def test_runs_show_state_usage_and_the_selected_runs_logs(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakePipelines()
    at = open_pipelines(sign_in(start_app(), "bob", PASSWORDS["bob"]), engine, monkeypatch)
    runs = frame(at, "CPU-seconds").set_index("Run")
    assert runs["State"].to_dict() == {"next-nightly": "scheduled", "sad-heron": "failed", "brisk-otter": "completed"}
    assert runs.loc["brisk-otter", "Duration"] == "1m 15s"
    assert runs.loc["brisk-otter", "CPU-seconds"] == 12.35
    assert runs.loc["brisk-otter", "Peak memory"] == "256 MB"
    assert (
        runs.loc["sad-heron", "Message"] == "Flow run encountered an exception · the source 'orders' is not reachable"
    )

    # The latest run that is more than a plan is shown: a failed one, with its error and its logs; it has ended,
    # so it cannot be cancelled.
    assert ":red-badge[failed]" in texts(at.markdown)
    assert "the source 'orders' is not reachable" in texts(at.error)
    assert "ConnectionRefusedError" in at.code[0].value
    assert "Cancel run" not in buttons(at)

    at.selectbox(key="pipelines_run").set_value(engine.named("brisk-otter").id).run()
    assert not at.exception, at.exception
    assert ":green-badge[completed]" in texts(at.markdown)
    assert "INFO     total=42" in at.code[0].value
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["CPU-seconds"] == "12.35" and metrics["Peak memory"] == "256 MB"


def test_runs_filter_by_flow_and_state(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]), FakePipelines(), monkeypatch)
    at.selectbox(key="pipelines_flow").set_value("nightly").run()
    assert frame(at, "CPU-seconds")["Run"].tolist() == ["next-nightly", "brisk-otter"]
    at.selectbox(key="pipelines_state").set_value("failed").run()
    assert not at.exception, at.exception
    assert "No runs match these filters." in texts(at.caption)
    # The deployments' last runs do not follow the filters.
    assert frame(at, "Schedule").set_index("Deployment").loc["hourly-ingest", "Last run"] == "failed"


def test_owner_runs_now_cancels_and_pauses(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine = FakePipelines()
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]), engine, monkeypatch)
    assert at.selectbox(key="pipelines_deployment").value == "hourly-ingest"
    assert "Resume" in buttons(at)  # hourly-ingest is paused

    at.selectbox(key="pipelines_deployment").set_value("nightly").run()
    assert "Pause" in buttons(at)
    at.button(key="pipelines_run_now").click().run()
    assert not at.exception, at.exception
    assert "Started run run-3 of nightly." in texts(at.toast)
    runs = frame(at, "CPU-seconds")
    assert runs[["Run", "State"]].values.tolist() == [
        ["next-nightly", "scheduled"],
        ["run-3", "scheduled"],
        ["sad-heron", "failed"],
        ["brisk-otter", "completed"],
    ]
    # The new run is the one shown, and it can be cancelled while it has not ended.
    assert at.selectbox(key="pipelines_run").value == engine.named("run-3").id
    assert "No log lines yet." in texts(at.caption)
    at.button(key="pipelines_cancel").click().run()
    assert not at.exception, at.exception
    assert "Run run-3 is cancelled." in texts(at.toast)
    assert "Cancel run" not in buttons(at)

    at.button(key="pipelines_pause").click().run()
    assert "nightly is paused." in texts(at.toast)
    assert engine.deployments["nightly"].paused
    assert at.button(key="pipelines_pause").label == "Resume"
    at.button(key="pipelines_pause").click().run()
    assert "nightly is resumed." in texts(at.toast)
    assert not engine.deployments["nightly"].paused


def test_a_refused_run_shows_the_servers_message(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine = FakePipelines()
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]), engine, monkeypatch)
    engine.refusal = Conflict("flow deployment 'nightly' is not deployed to the engine; deploy it again")
    at.selectbox(key="pipelines_deployment").set_value("nightly")
    at.button(key="pipelines_run_now").click().run()
    assert not at.exception, at.exception
    assert "is not deployed to the engine; deploy it again" in texts(at.error)
    assert not at.toast
    assert len(engine.runs) == 3


def test_viewer_sees_everything_but_no_buttons(
    start_app: StartApp,  # noqa: F811
    carol_views_churn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakePipelines()
    engine.start("nightly")  # an active run, which a member who may run flows could cancel
    at = open_pipelines(sign_in(start_app(), "carol", PASSWORDS["carol"]), engine, monkeypatch)
    assert set(frame(at, "Schedule")["Deployment"]) == {"nightly", "hourly-ingest"}
    assert len(frame(at, "CPU-seconds")) == 4
    assert ":gray-badge[scheduled]" in texts(at.markdown)
    assert buttons(at) == ["Refresh"]  # reading only: no Run now, Pause, Resume or Cancel run
    assert "may look at its flows, not run or change them" in texts(at.caption)

    engine.set(engine.named("run-3").id, state="running", state_name="Running")
    at.button(key="pipelines_refresh").click().run()
    assert frame(at, "CPU-seconds").set_index("Run").loc["run-3", "State"] == "running"
    assert ":blue-badge[running]" in texts(at.markdown)

    at.selectbox(key="pipelines_run").set_value(engine.named("brisk-otter").id).run()
    assert "INFO     total=42" in at.code[0].value


def test_no_deployments_yet(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine = FakePipelines()
    engine.deployments.clear()
    engine.runs.clear()
    at = open_pipelines(sign_in(start_app(), "alice", PASSWORDS["alice"]), engine, monkeypatch)
    assert "No flows are deployed yet" in texts(at.info)
    assert "No runs yet." in texts(at.caption)
    assert not at.dataframe
