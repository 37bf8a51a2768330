"""Monitors through the API on a fresh control plane: runs recorded as the monitor flow records them,
alerts on drift only, reports kept in storage, webhooks only to allowed hosts.

The monitor flow itself needs Prefect (tests/integration/monitoring); here monitors are rows as
``monitor create`` leaves them, and runs are sent through the real endpoint the flow uses.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from selfserve import Client, InvalidInput, NotFound, PermissionDenied
from selfserve.errors import ServiceUnavailable
from selfserve.monitoring import service
from tests.support import Platform, add_deployment, add_monitor, drift_run

HTML = b"<html><body><h1>Data drift</h1></body></html>"


@dataclass
class World:
    platform: Platform
    admin: Client
    alice: Client  # owner
    vera: Client  # viewer
    bob: Client  # another project's owner
    p: str


@pytest.fixture
def world(sqlite_platform: Platform) -> Iterator[World]:
    admin = sqlite_platform.admin()
    alice, vera, bob = (sqlite_platform.user(n, admin_client=admin) for n in ("alice", "vera", "bob"))
    p = f"p-{uuid.uuid4().hex[:6]}"
    alice.projects.create(p)
    bob.projects.create(f"q-{uuid.uuid4().hex[:6]}")
    alice.members.add(p, "vera", role="viewer")
    add_deployment(sqlite_platform, p, "v1")
    alice.routes.create(p, "score", "v1")
    yield World(sqlite_platform, admin, alice, vera, bob, p)


def test_runs_are_kept_and_drift_raises_an_alert(world: World, tmp_path: Any) -> None:
    a, p = world.alice, world.p
    add_monitor(world.platform, p, "score")
    ok = a.monitors.record(p, "score", drift_run(0.0, []), HTML)
    assert (ok.status, ok.has_report) == ("ok", True)
    assert a.alerts.list(p) == []
    drifted = a.monitors.record(p, "score", drift_run(2 / 3, ["age", "income"]), HTML)
    nodata = a.monitors.record(p, "score", {"status": "no_data", "rows_reference": 2000, "rows_current": 0})
    assert nodata.status == "no_data" and nodata.drift_share is None and not nodata.has_report
    (alert,) = a.alerts.list(p)
    assert (alert.kind, alert.route, alert.run_id) == ("drift", "score", drifted.id)
    assert "2 of 3 columns drifted" in alert.message and "age, income" in alert.message
    assert [r.status for r in a.monitors.runs(p, "score")] == ["no_data", "drift", "ok"]
    shown = a.monitors.get(p, "score")
    assert shown.last_run is not None and shown.last_run.status == "no_data"
    # The newest report, and one by run.
    out = a.monitors.report(p, "score", tmp_path / "latest.html")
    assert out.read_bytes() == HTML
    assert a.monitors.report(p, "score", tmp_path / "first.html", run=ok.id).read_bytes() == HTML
    with pytest.raises(NotFound, match=f"no report of run {nodata.id}"):
        a.monitors.report(p, "score", tmp_path / "none.html", run=nodata.id)
    # Acknowledging: by a writer, once; the viewer reads alerts but may not.
    with pytest.raises(PermissionDenied):
        world.vera.alerts.ack(p, alert.id)
    assert [x.id for x in world.vera.alerts.list(p, open_only=True)] == [alert.id]
    acked = a.alerts.ack(p, alert.id)
    assert acked.acknowledged_by == "alice"
    assert world.vera.alerts.list(p, open_only=True) == []


def test_other_projects_do_not_see_monitors_or_alerts(world: World) -> None:
    add_monitor(world.platform, world.p, "score")
    world.alice.monitors.record(world.p, "score", drift_run(1.0, ["age", "income", "plan"]))
    for call in (
        lambda: world.bob.monitors.get(world.p, "score"),
        lambda: world.bob.alerts.list(world.p),
        lambda: world.bob.monitors.record(world.p, "score", drift_run(0.0, [])),
    ):
        with pytest.raises(NotFound, match=f"project '{world.p}' not found"):
            call()
    with pytest.raises(PermissionDenied):
        world.vera.monitors.record(world.p, "score", drift_run(0.0, []))
    with pytest.raises(NotFound, match="no monitor on route 'other'"):
        world.alice.monitors.runs(world.p, "other")


def test_create_checks_route_reference_and_engine(world: World) -> None:
    a, p = world.alice, world.p
    with pytest.raises(NotFound, match="route 'nope' not found"):
        a.monitors.create(p, "nope", reference="customers@0")
    with pytest.raises(InvalidInput, match="reference dataset 'customers' not found"):
        a.monitors.create(p, "score", reference="customers@0")
    with pytest.raises(InvalidInput, match="give --reference"):
        a.monitors.create(p, "score")  # models are off here: no lineage to take it from
    a.datasets.upload(p, "customers", _csv(world))
    with pytest.raises(InvalidInput, match="has no version 4"):
        a.monitors.create(p, "score", reference="customers@4")
    with pytest.raises(InvalidInput, match="not a cron expression"):
        a.monitors.create(p, "score", reference="customers", schedule="every hour")
    # A monitor runs as a flow: without pipelines it cannot be created, and nothing is left behind.
    with pytest.raises(ServiceUnavailable, match="pipelines are not enabled"):
        a.monitors.create(p, "score", reference="customers@0")
    assert a.monitors.list(p) == []


def _csv(world: World) -> Any:
    path = world.platform.settings.home / "customers.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("customer_id,age,churned\n1,30,0\n2,40,1\n")
    return path


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "file:///etc/passwd",
    ],
)
def test_webhooks_to_this_machine_or_its_network_are_refused(world: World, url: str) -> None:
    with pytest.raises(InvalidInput, match="webhook refused"):
        service.check_webhook(world.platform.settings, url)
    with pytest.raises(InvalidInput, match="webhook refused"):
        world.alice.monitors.create(world.p, "score", reference="customers@0", webhook_url=url)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_allowlisted_webhook_gets_every_alert(world: World) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/drift"
    settings = world.platform.settings
    try:
        settings.monitoring.webhook_allowlist = ["127.0.0.1"]
        service.check_webhook(settings, url)  # allowed now
        add_monitor(world.platform, world.p, "score", webhook_url=url)
        run = world.alice.monitors.record(world.p, "score", drift_run(1.0, ["age", "income", "plan"]))
        deadline = time.monotonic() + 10
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        (payload,) = _Hook.received
        assert (payload["project"], payload["route"], payload["kind"], payload["run_id"]) == (
            world.p,
            "score",
            "drift",
            run.id,
        )
        while world.alice.alerts.list(world.p)[0].webhook is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.alice.alerts.list(world.p)[0].webhook == "sent: 204"
        # Taken off the list, the same host is refused when the next alert is sent.
        settings.monitoring.webhook_allowlist = []
        world.alice.monitors.record(world.p, "score", drift_run(1.0, ["age", "income", "plan"]))
        while world.alice.alerts.list(world.p)[0].webhook is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.alice.alerts.list(world.p)[0].webhook.startswith("refused:")
        assert len(_Hook.received) == 1
    finally:
        settings.monitoring.webhook_allowlist = []
        server.shutdown()
        server.server_close()
