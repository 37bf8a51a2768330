"""The console's Monitoring page, run in-process with Streamlit's AppTest against a live API.

No Prefect here (pipelines are off): monitors are rows as ``monitor create`` leaves them, and their runs are
sent through the real endpoint the monitor flow uses (``client.monitors.record``), as in
tests/unit/monitoring/test_monitoring_api.py. Route ``score`` sends everything to deployment v1, a row as
the serving runtime leaves it (no BentoML either).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests import support
from tests.support import Platform, add_deployment
from tests.unit.console.test_app import (  # noqa: F401  (api_url and start_app are fixtures)
    PASSWORDS,
    StartApp,
    api_url,
    login,
    sign_in,
    start_app,
    texts,
)

PAGE = "views/monitoring.py"
PROJECT = "churn"
HTML = b"<html><body><h1>Data drift of score</h1></body></html>"
NO_DATA = {"status": "no_data", "rows_reference": 2000, "rows_current": 0}


def add_monitor(platform: Platform, route: str, **fields: Any) -> None:
    support.add_monitor(platform, PROJECT, route, **{"schedule": "*/15 * * * *", **fields})


def add_flow(platform: Platform, name: str) -> None:
    support.add_monitor_flow(platform, PROJECT, name)


def drift_run(share: float, drifted: list[str]) -> dict[str, Any]:
    return support.drift_run(
        share,
        drifted,
        quality={"accuracy": 0.81, "f1": 0.64},
        window_start="2025-06-01T01:00:00Z",
        window_end="2025-06-01T02:00:00Z",
    )


@pytest.fixture
def routed(api_url: str, sqlite_platform: Platform) -> Iterator[str]:  # noqa: F811
    """In churn: route ``score`` over deployment v1. Carol is a viewer of churn."""
    add_deployment(sqlite_platform, PROJECT, "v1")
    with login(api_url, "alice") as alice:
        alice.routes.create(PROJECT, "score", "v1")
        alice.members.add(PROJECT, "carol", "viewer")
    yield api_url


def record(url: str, summary: dict[str, Any], html: bytes | None = None) -> int:
    with login(url, "alice") as alice:
        return alice.monitors.record(PROJECT, "score", summary, html).id


def open_monitoring(at: AppTest) -> AppTest:
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def frame(at: AppTest, column: str) -> Any:
    """The page's dataframe that has ``column``, as pandas."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart"))


def reports(at: AppTest) -> list[bytes]:
    """The HTML of each report embedded on the page."""
    prefix = "data:text/html;base64,"
    return [
        base64.b64decode(f.proto.src.removeprefix(prefix)) for f in at.get("iframe") if f.proto.src.startswith(prefix)
    ]


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.main.button]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# -- what the page shows ------------------------------------------------------------------------------


def test_without_monitors_the_page_says_how_to_make_one(start_app: StartApp, routed: str) -> None:  # noqa: F811
    at = open_monitoring(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert at.title[0].value.endswith("Monitoring")
    assert "No monitors yet." in texts(at.info)
    assert "selfserve monitor create churn ROUTE" in texts(at.info)
    assert "No alerts yet" in texts(at.caption)
    assert not at.dataframe and charts(at) == 0 and not reports(at)


def test_a_monitor_without_runs_is_an_empty_state(start_app: StartApp, routed: str, sqlite_platform: Platform) -> None:  # noqa: F811
    add_monitor(sqlite_platform, "score")
    at = open_monitoring(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    monitors = frame(at, "Threshold").set_index("Route")
    assert monitors.loc["score", "Reference"] == "customers@0"
    assert (monitors.loc["score", "Window"], monitors.loc["score", "Schedule"]) == ("1h", "*/15 * * * *")
    assert monitors.loc["score", "Threshold"] == 0.3
    assert monitors.loc["score", "Last status"] == "never run"
    assert "No runs yet: the monitor runs on its schedule (cron `*/15 * * * *`, UTC), or now with **Run now**." in (
        texts(at.info)
    )
    assert charts(at) == 0 and not reports(at)


def test_drift_over_time_the_latest_run_its_report_and_alerts(
    start_app: StartApp,  # noqa: F811
    routed: str,
    sqlite_platform: Platform,
) -> None:
    add_monitor(sqlite_platform, "score")
    first = record(routed, drift_run(0.0, []), b"<html>first</html>")
    latest = record(routed, drift_run(2 / 3, ["age", "income"]), HTML)
    at = open_monitoring(sign_in(start_app(), "bob", PASSWORDS["bob"]))

    monitors = frame(at, "Threshold").set_index("Route")
    assert monitors.loc["score", "Last status"] == "drift"
    assert monitors.loc["score", "Last drift share"] == pytest.approx(2 / 3)
    assert monitors.loc["score", "Drifted"] == "2 of 3"
    assert at.selectbox(key="monitoring_route").value == "score"
    # Drift over time (with the threshold) and the latest run's columns.
    assert charts(at) == 2
    assert at.selectbox(key="monitoring_run").value == latest
    assert f"Run **#{latest}** :red-badge[drift]" in texts(at.markdown)
    shown = metrics(at)
    assert (shown["Drift share"], shown["Drifted columns"], shown["Rows in window"]) == ("67%", "2 of 3", "500")
    assert (shown["Accuracy"], shown["F1"]) == ("0.810", "0.640")
    assert "Drifted: `age`, `income`" in texts(at.caption)
    assert reports(at) == [HTML]
    runs = frame(at, "Report").set_index("Run")
    assert runs["Status"].to_dict() == {latest: "drift", first: "ok"}

    # An older run, and its own report.
    at.selectbox(key="monitoring_run").set_value(first).run()
    assert not at.exception, at.exception
    assert reports(at) == [b"<html>first</html>"]
    assert metrics(at)["Drifted columns"] == "0 of 3"

    # The drift raised an alert: announced on top, listed with its button; bob (a scientist) acknowledges it.
    assert "1 open alert on score" in texts(at.warning)
    assert "drift on route score: 2 of 3 columns drifted" in texts(at.markdown).replace("\\", "")
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert not at.exception, at.exception
    assert "Alert #1 on score is acknowledged." in [t.value for t in at.toast]
    assert "Acknowledge" not in buttons(at) and not at.warning
    assert "No open alerts" in texts(at.caption)
    acknowledged = frame(at, "Acknowledged by")
    assert acknowledged["Acknowledged by"].tolist() == ["bob"]
    with login(routed, "alice") as alice:
        assert alice.alerts.list(PROJECT)[0].acknowledged_by == "bob"


def test_a_run_without_data_says_so_rather_than_no_drift(
    start_app: StartApp,  # noqa: F811
    routed: str,
    sqlite_platform: Platform,
) -> None:
    add_monitor(sqlite_platform, "score")
    record(routed, drift_run(0.0, []), HTML)
    failed = record(routed, {"status": "error", "error": "reference customers@0: dataset not found"})
    nodata = record(routed, NO_DATA)
    at = open_monitoring(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert frame(at, "Threshold").set_index("Route").loc["score", "Last status"] == "no data in window"
    assert f"Run **#{nodata}** :gray-badge[no data in window]" in texts(at.markdown)
    assert "No data in window: **score** logged no predictions" in texts(at.info)
    assert "1 run had no data in the window" in texts(at.caption)
    assert charts(at) == 1  # drift over time only: nothing measured per column
    assert not reports(at) and f"Run #{nodata} kept no report." in texts(at.caption)
    page = "\n".join(texts(x) for x in (at.markdown, at.info, at.caption, at.warning)).lower()
    assert "no drift" not in page and "drift share" not in {m.label.lower() for m in at.metric}

    # A failed run says why; it measured nothing either.
    at.selectbox(key="monitoring_run").set_value(failed).run()
    assert not at.exception, at.exception
    assert "The run failed: reference customers@0: dataset not found" in texts(at.error)
    assert not at.metric


# -- what the roles may do ------------------------------------------------------------------------------


def test_run_now_shows_why_it_cannot_run(start_app: StartApp, routed: str, sqlite_platform: Platform) -> None:  # noqa: F811
    add_flow(sqlite_platform, "monitor-score")
    add_monitor(sqlite_platform, "score", flow_deployment="monitor-score")
    at = open_monitoring(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    at.button(key="monitoring_run_now").click().run()
    assert not at.exception, at.exception
    assert "pipelines are not enabled on this platform (setting pipelines.enabled)" in texts(at.error)
    assert not at.toast


def test_a_viewer_sees_monitors_and_alerts_but_no_controls(
    start_app: StartApp,  # noqa: F811
    routed: str,
    sqlite_platform: Platform,
) -> None:
    add_monitor(sqlite_platform, "score")
    record(routed, drift_run(1.0, ["age", "income", "plan"]), HTML)
    at = open_monitoring(sign_in(start_app(), "carol", PASSWORDS["carol"]))
    assert charts(at) == 2 and reports(at) == [HTML]
    assert "1 open alert on score" in texts(at.warning)
    assert "Run now" not in buttons(at) and "Acknowledge" not in buttons(at)
    assert "may look at its monitors, not run them" in texts(at.caption)
    assert "may look at alerts, not acknowledge them" in texts(at.caption)
