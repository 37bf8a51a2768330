from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from selfserve import runtime
from selfserve.errors import Conflict
from selfserve.runtime import _process, _state
from selfserve.runtime._state import ServiceRecord, State
from selfserve.settings import get_settings

Spawn = Callable[[str], tuple[subprocess.Popen[bytes], ServiceRecord]]


def _record_state(*records: ServiceRecord) -> Path:
    path = _state.state_path(get_settings().run_dir)
    _state.save(path, State(services=list(records), started_at="now"))
    return path


def test_nothing_recorded_means_not_running() -> None:
    report = runtime.status()
    assert report.services == [] and not report.healthy
    assert report.to_dict() == {"running": False, "healthy": False, "total_rss_mib": 0.0, "services": []}
    assert runtime.down() == runtime.DownResult(stopped=[], running=False)


def test_status_reports_live_unhealthy_and_stopped_services(spawn_tree: Spawn) -> None:
    proc, live = spawn_tree("api")
    dead = ServiceRecord("console", 999_999_999, 999_999_999, 1, "http://x", "http://x", "-", "", 0.0)
    _record_state(live, dead)
    report = runtime.status()
    api, console = report.services
    assert (api.name, api.state, api.pid) == ("api", "unhealthy", proc.pid)
    assert api.health == "ConnectError"
    assert api.rss_bytes > 0 and api.uptime_seconds is not None and api.uptime_seconds >= 0
    assert (console.state, console.rss_bytes, console.uptime_seconds) == ("stopped", 0, None)
    assert not report.healthy
    assert report.total_rss_bytes == api.rss_bytes
    assert report.to_dict()["services"][0]["state"] == "unhealthy"  # type: ignore[index]


def test_up_refuses_while_a_recorded_process_lives(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("api")
    path = _record_state(rec)
    before = path.read_text()
    with pytest.raises(Conflict, match=rf"already running \(api pid {proc.pid} at -\); run `selfserve down` first"):
        runtime.up()
    assert path.read_text() == before
    assert not (get_settings().home / "selfserve.db").exists()


def test_a_busy_port_stops_up_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        settings = runtime.configure(api_port=port)
        with pytest.raises(Conflict, match=rf"port {port} on 127.0.0.1 for api is already in use.*--api-port"):
            runtime.up(settings)
    assert _state.load(_state.state_path(settings.run_dir)) is None
    assert not (settings.home / "selfserve.db").exists()
    assert not settings.log_dir.exists()


def test_down_stops_the_recorded_trees_and_forgets_them(spawn_tree: Spawn) -> None:
    (proc_a, a), (proc_b, b) = spawn_tree("api"), spawn_tree("console")
    path = _record_state(a, b)
    result = runtime.down(timeout=5)
    assert result.running and [s.name for s in result.stopped] == ["api", "console"]
    assert proc_a.wait(5) is not None and proc_b.wait(5) is not None
    assert not path.exists()
    assert runtime.down() == runtime.DownResult(stopped=[], running=False)


def test_a_stale_record_is_cleared(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("api")
    proc.kill()
    proc.wait(5)
    path = _record_state(rec)
    assert runtime.down() == runtime.DownResult(stopped=[], running=False)
    assert not path.exists()
    assert [p.pid for p in _process.group_members(rec.pgid)] == [], "the orphans of the dead leader are stopped too"


def test_up_clears_a_stale_record_before_checking_ports(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("api")
    proc.kill()
    proc.wait(5)
    path = _record_state(rec)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(Conflict, match="already in use"):
            runtime.up(runtime.configure(api_port=s.getsockname()[1]))
    assert not path.exists()
