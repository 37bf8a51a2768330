from __future__ import annotations

import dataclasses
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from selfserve.errors import Conflict
from selfserve.runtime import ServiceSpec, _process
from selfserve.runtime._state import ServiceRecord
from tests.support import free_port

Spawn = Callable[[str], tuple[subprocess.Popen[bytes], ServiceRecord]]


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _spec(name: str, port: int) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=("x",),
        host="127.0.0.1",
        port=port,
        health_path="/",
        url="-",
        port_setting=f"server.{name}_port",
        port_flag=f"--{name}-port",
    )


def test_a_listening_port_is_busy_and_a_free_one_is_not(listener: int) -> None:
    assert _process.port_problem("127.0.0.1", listener) == "already in use"
    assert _process.port_problem("0.0.0.0", listener) == "already in use"
    assert _process.port_problem("127.0.0.1", free_port()) is None


def test_check_ports_names_every_busy_port_and_how_to_change_it(listener: int) -> None:
    other = free_port()
    _process.check_ports([_spec("api", other), _spec("console", free_port())])
    with pytest.raises(Conflict) as e:
        _process.check_ports([_spec("api", other), _spec("console", listener)])
    assert f"port {listener} on 127.0.0.1 for console is already in use" in e.value.message
    assert "--console-port" in e.value.message and "SELFSERVE_SERVER__CONSOLE_PORT" in e.value.message
    assert str(other) not in e.value.message


def test_check_ports_refuses_shared_and_unfixed_ports() -> None:
    port = free_port()
    with pytest.raises(Conflict, match=f"console and api are both set to port {port}"):
        _process.check_ports([_spec("api", port), _spec("console", port)])
    with pytest.raises(Conflict, match="api has no fixed port"):
        _process.check_ports([_spec("api", 0)])


def test_spawn_detaches_logs_and_keeps_the_previous_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "svc.log"
    for text in ("first", "second"):
        proc = _process.spawn([sys.executable, "-c", f"print({text!r})"], {}, log, cwd=tmp_path / "cwd")
        assert proc.wait(20) == 0
        assert psutil.Process().pid != proc.pid
    assert log.read_text() == "second\n"
    assert (tmp_path / "logs" / "svc.log.1").read_text() == "first\n"
    assert _process.tail(log) == "second"


def test_spawn_starts_a_new_session(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("svc")
    assert rec.pgid == proc.pid
    assert psutil.Process(proc.pid).ppid() == os.getpid()
    assert os.getsid(proc.pid) == proc.pid
    assert os.getpgid(0) != proc.pid


def test_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert _process.tail(path, 3) == "line 97\nline 98\nline 99"
    assert "cannot read" in _process.tail(tmp_path / "missing")


def test_find_tells_a_live_process_from_a_reused_pid(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("svc")
    found = _process.find(rec.pid, rec.create_time)
    assert found is not None and found.pid == proc.pid
    assert _process.find(rec.pid, rec.create_time - 3600) is None
    assert _process.tree_rss(found) > psutil.Process(proc.pid).memory_info().rss


def test_stop_ends_the_whole_tree_including_escaped_descendants(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("svc")
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) == 3
    assert _process.stop([rec], timeout=5) == []
    proc.wait(5)
    assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert _process.find(rec.pid, rec.create_time) is None
    assert _process.stop([rec]) == [], "stopping again is a no-op"


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)"
    )
    log = tmp_path / "stubborn.log"
    proc = _process.spawn([sys.executable, "-c", code], {}, log, cwd=tmp_path)
    try:
        while "ready" not in log.read_text():
            assert proc.poll() is None
            time.sleep(0.05)
        rec = ServiceRecord("stubborn", proc.pid, proc.pid, 0, "-", "-", str(log), "", _process.create_time(proc.pid))
        assert _process.stop([rec], timeout=0.5) == []
        assert proc.wait(5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_leaves_a_stranger_with_a_recorded_pid_alone(spawn_tree: Spawn) -> None:
    proc, rec = spawn_tree("svc")
    # The pid is live but started at another time than recorded: someone else's process now.
    stale = dataclasses.replace(rec, create_time=rec.create_time - 100)
    assert _process.stop([stale], timeout=0.1) == []
    assert _process.find(rec.pid, rec.create_time) is not None
    assert len(psutil.Process(proc.pid).children(recursive=True)) == 2


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_probe_accepts_only_200(health_server: str) -> None:
    with _process.health_client(timeout=2) as client:
        assert _process.probe(client, f"{health_server}/ok") == (True, "ok")
        assert _process.probe(client, f"{health_server}/starting") == (False, "HTTP 503")
        assert _process.probe(client, f"http://127.0.0.1:{free_port()}/ok") == (False, "ConnectError")
