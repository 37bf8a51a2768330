"""``selfserve monitor`` and ``selfserve alert`` against the API served by uvicorn.

No Prefect here (pipelines are off), so ``monitor create`` and ``monitor run`` meet the API's real 503. Monitors
are rows as ``monitor create`` leaves them, and their runs are sent through the real endpoint the monitor flow
uses (``client.monitors.record``), as in tests/unit/monitoring/test_monitoring_api.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from selfserve.cli.monitor import span, window_seconds
from selfserve.client import Client
from tests import support
from tests.support import add_deployment, add_monitor
from tests.support import add_monitor_flow as add_flow
from tests.unit.cli.conftest import PASSWORD, Cli

HTML = b"<html><body><h1>Data drift</h1></body></html>"


def drift_run(share: float, drifted: list[str]) -> dict[str, Any]:
    return support.drift_run(share, drifted, window_start="2025-06-01T01:00:00Z", window_end="2025-06-01T02:00:00Z")


NO_DATA = {"status": "no_data", "rows_reference": 2000, "rows_current": 0}


def sdk(cli: Cli, user: str) -> Client:
    c = cli.platform.client()
    c.login(user, PASSWORD, save=False)
    return c


@pytest.fixture
def alice(cli: Cli) -> Cli:
    """Alice owns ``churn``, whose route ``score`` sends everything to deployment v1; vera is a viewer there."""
    cli.add_user("alice")
    cli.add_user("vera")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    add_deployment(cli.platform, "churn", "v1")
    owner = sdk(cli, "alice")
    owner.routes.create("churn", "score", "v1")
    owner.members.add("churn", "vera", "viewer")
    return cli


# -- monitors ----------------------------------------------------------------------------------------


def test_list_show_and_runs_of_a_monitor(alice: Cli) -> None:
    assert alice.ok("monitor", "list", "churn").stdout.strip() == "(none)"
    add_monitor(alice.platform, "churn", "score", schedule="*/15 * * * *")
    table = alice.ok("monitor", "list", "churn").stdout
    assert "score" in table and "customers@0" in table and "*/15 * * * *" in table and "never run" in table
    assert "1h" in table and "30%" in table

    owner = sdk(alice, "alice")
    ok = owner.monitors.record("churn", "score", drift_run(0.0, []), HTML)
    drift = owner.monitors.record("churn", "score", drift_run(2 / 3, ["age", "income"]), HTML)
    nodata = owner.monitors.record("churn", "score", NO_DATA)

    runs = alice.json("monitor", "runs", "churn", "score")
    assert [(r["id"], r["status"], r["has_report"]) for r in runs] == [
        (nodata.id, "no_data", False),
        (drift.id, "drift", True),
        (ok.id, "ok", True),
    ]
    assert runs[1]["window_start"] == "2025-06-01T01:00:00Z" and runs[1]["quality"] == {"accuracy": 0.81}
    table = alice.ok("monitor", "runs", "churn", "score").stdout
    # A window without traffic is said as such: neither "ok" nor a drift of 0%.
    lines = {
        line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│ ") and "│" in line[2:]
    }
    assert "no data in window" in lines[str(nodata.id)] and " - " in lines[str(nodata.id)]
    assert "67%" in lines[str(drift.id)] and "drift " in lines[str(drift.id)] and "yes" in lines[str(drift.id)]
    assert "0% " in lines[str(ok.id)] and " ok " in lines[str(ok.id)]
    assert len(alice.json("monitor", "runs", "churn", "score", "--limit", "1")) == 1

    shown = alice.ok("monitor", "show", "churn", "score").stdout
    assert "reference        customers@0" in shown
    assert "schedule         */15 * * * *" in shown
    assert "threshold        30%" in shown
    assert "last_status      no data in window" in shown
    assert "last_drift       -" in shown
    data = alice.json("monitor", "show", "churn", "score")
    assert (data["route"], data["last_run"]["id"], data["window_seconds"]) == ("score", nodata.id, 3600)
    listed = alice.json("monitor", "list", "churn")
    assert [(m["route"], m["last_run"]["status"]) for m in listed] == [("score", "no_data")]

    # The viewer reads monitors and their runs.
    alice.login("vera", PASSWORD)
    assert "no data in window" in alice.ok("monitor", "list", "churn").stdout


def test_report_is_saved_and_opened(alice: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_monitor(alice.platform, "churn", "score")
    owner = sdk(alice, "alice")
    first = owner.monitors.record("churn", "score", drift_run(0.0, []), HTML)
    newest = owner.monitors.record("churn", "score", drift_run(1.0, ["age", "income", "plan"]), b"<html>newest</html>")
    nodata = owner.monitors.record("churn", "score", NO_DATA)

    out = tmp_path / "reports" / "drift.html"
    out.parent.mkdir()
    r = alice.ok("monitor", "report", "churn", "score", "--out", str(out))
    assert out.read_bytes() == b"<html>newest</html>"
    assert r.stdout.strip() == f"saved the newest report of the monitor on route score to {out} (19 B)"

    # By default into the working directory, as ROUTE-report.html; --run picks an older one.
    monkeypatch.chdir(tmp_path)
    r = alice.ok("monitor", "report", "churn", "score", "--run", str(first.id))
    assert (tmp_path / "score-report.html").read_bytes() == HTML
    assert f"saved the report of run {first.id}" in r.stdout

    r = alice.fails("monitor", "report", "churn", "score", "--run", str(nodata.id))
    assert f"no report of run {nodata.id} of the monitor on route 'score'" in r.stderr
    alice.fails("monitor", "report", "churn", "score", "--run", "0", code=2)

    # --open hands the saved file to the web browser named by BROWSER.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(browser))
    alice.ok("monitor", "report", "churn", "score", "--out", "latest.html", "--open")
    assert opened.read_text() == (tmp_path / "latest.html").resolve().as_uri()
    assert newest.has_report


def test_create_is_refused_without_pipelines_and_checks_its_input(alice: Cli, tmp_path: Path) -> None:
    r = alice.fails("monitor", "create", "churn", "nope", "--reference", "customers@0")
    assert "route 'nope' not found in project 'churn'" in r.stderr
    r = alice.fails("monitor", "create", "churn", "score", "--reference", "customers@0")
    assert "reference dataset 'customers' not found" in r.stderr
    r = alice.fails("monitor", "create", "churn", "score")
    assert "give --reference DATASET@VERSION" in r.stderr  # models are off here: no lineage to take it from
    r = alice.fails(
        "monitor", "create", "churn", "score", "--reference", "customers@0", "--webhook", "http://127.0.0.1:9/hook"
    )
    assert "webhook refused" in r.stderr

    csv = tmp_path / "customers.csv"
    csv.write_text("customer_id,age,churned\n1,30,0\n2,40,1\n")
    sdk(alice, "alice").datasets.upload("churn", "customers", csv)
    # As the issue writes it. A monitor runs as a flow: without pipelines the API answers 503 (exit 3).
    r = alice.fails(
        "monitor",
        "create",
        "churn",
        "score",
        "--reference",
        "customers@0",
        "--window",
        "1h",
        "--schedule",
        "*/15 * * * *",
        "--drift-share",
        "0.3",
        "--on-drift",
        "retrain",
        "--policy",
        "manual",
        code=3,
    )
    assert r.stderr.strip() == "error: pipelines are not enabled on this platform (setting pipelines.enabled)"
    assert alice.ok("monitor", "list", "churn").stdout.strip() == "(none)", "nothing is left behind"

    # What is not a duration, a cron expression, a share or a choice is a usage error (exit 2).
    r = alice.fails("monitor", "create", "churn", "score", "--window", "soon", code=2)
    assert "not a duration" in r.stderr
    r = alice.fails("monitor", "create", "churn", "score", "--window", "0.5s", code=2)
    assert "not a positive whole number of seconds" in r.stderr
    r = alice.fails("monitor", "create", "churn", "score", "--schedule", "every hour", code=2)
    assert "not a cron expression" in r.stderr
    alice.fails("monitor", "create", "churn", "score", "--drift-share", "1.5", code=2)
    alice.fails("monitor", "create", "churn", "score", "--on-drift", "panic", code=2)
    alice.fails("monitor", "create", "churn", "score", "--policy", "sometimes", code=2)
    # A window the API does not take is its refusal (exit 1).
    r = alice.fails("monitor", "create", "churn", "score", "--reference", "customers@0", "--window", "10s")
    assert "window_seconds" in r.stderr


def test_windows_read_as_durations() -> None:
    assert [window_seconds(w) for w in ("1h", "30m", "3600", "90s", "2d", " 15m ")] == [
        3600,
        1800,
        3600,
        90,
        172800,
        900,
    ]
    assert [span(s) for s in (3600, 1800, 5400, 90, 172800, 604800)] == ["1h", "30m", "90m", "90s", "2d", "1w"]


def test_run_now_needs_pipelines_and_delete_asks_first(alice: Cli) -> None:
    add_flow(alice.platform, "churn", "monitor-score")
    add_monitor(alice.platform, "churn", "score", flow_deployment="monitor-score")
    r = alice.fails("monitor", "run", "churn", "score", code=3)
    assert r.stderr.strip() == "error: pipelines are not enabled on this platform (setting pipelines.enabled)"
    r = alice.fails("monitor", "run", "churn", "nope")
    assert "no monitor on route 'nope' in project 'churn'" in r.stderr

    owner = sdk(alice, "alice")
    owner.routes.create("churn", "rank", "v1")
    add_monitor(alice.platform, "churn", "rank")
    r = alice.fails("monitor", "delete", "churn", "rank")
    assert "pass --yes to confirm" in r.stderr
    alice.login("vera", PASSWORD)
    r = alice.fails("monitor", "delete", "churn", "rank", "--yes")
    assert "role 'viewer' may not monitor:write" in r.stderr
    alice.login("alice", PASSWORD)
    assert alice.ok("monitor", "delete", "churn", "rank", "--yes").stdout.strip() == "deleted the monitor on route rank"
    assert [m["route"] for m in alice.json("monitor", "list", "churn")] == ["score"]
    for args in (("show", "churn", "rank"), ("runs", "churn", "rank"), ("report", "churn", "rank")):
        r = alice.fails("monitor", *args)
        assert "no monitor on route 'rank' in project 'churn'" in r.stderr, args
    r = alice.fails("monitor", "list", "elsewhere")
    assert "project 'elsewhere' not found" in r.stderr


# -- alerts ------------------------------------------------------------------------------------------


def test_alerts_are_listed_and_acknowledged_by_writers_only(alice: Cli) -> None:
    add_monitor(alice.platform, "churn", "score")
    owner = sdk(alice, "alice")
    owner.monitors.record("churn", "score", drift_run(0.0, []))  # no drift: no alert
    assert alice.ok("alert", "list", "churn").stdout.strip() == "(none)"
    run = owner.monitors.record("churn", "score", drift_run(2 / 3, ["age", "income"]))

    table = alice.ok("alert", "list", "churn").stdout
    assert "drift on route" in table and "score" in table
    (alert,) = alice.json("alert", "list", "churn", "--open")
    assert alert["message"].startswith("drift on route score: 2 of 3 columns drifted (share 0.67 >= 0.30): age, income")
    assert (alert["route"], alert["kind"], alert["run_id"], alert["acknowledged_at"]) == (
        "score",
        "drift",
        run.id,
        None,
    )
    assert alert["detail"]["drifted"] == ["age", "income"]
    assert alice.json("alert", "list", "churn", "--route", "other") == []
    assert len(alice.json("alert", "list", "churn", "--route", "score", "--limit", "1")) == 1

    # The viewer sees the alert but may not acknowledge it (403: exit 1, the API's message).
    alice.login("vera", PASSWORD)
    assert [a["id"] for a in alice.json("alert", "list", "churn", "--open")] == [alert["id"]]
    r = alice.fails("alert", "ack", "churn", str(alert["id"]))
    assert r.stderr.strip() == "error: role 'viewer' may not monitor:write in project 'churn'"

    alice.login("alice", PASSWORD)
    r = alice.ok("alert", "ack", "churn", str(alert["id"]))
    assert r.stdout.startswith(f"acknowledged alert {alert['id']} on route score (alice at ")
    assert alice.json("alert", "list", "churn", "--open") == []
    (acked,) = alice.json("alert", "list", "churn")
    assert acked["acknowledged_by"] == "alice"
    assert "alice" in alice.ok("alert", "list", "churn").stdout

    r = alice.fails("alert", "ack", "churn", "999")
    assert "alert 999 not found in project 'churn'" in r.stderr
    alice.fails("alert", "ack", "churn", "first", code=2)
    acked_again = json.loads(alice.ok("alert", "ack", "churn", str(alert["id"]), "--json").stdout)
    assert acked_again["acknowledged_at"] == acked["acknowledged_at"], "acknowledged once"
