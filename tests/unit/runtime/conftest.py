"""Fixtures for the runtime's unit tests: real detached processes, always cleaned up."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from selfserve.runtime import _process
from selfserve.runtime._state import ServiceRecord

# A process tree like Streamlit's or a server with workers: a parent with one child in its group,
# and one grandchild that left the group with setsid(); all sleep until signalled.
TREE = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def spawn_tree(tmp_path: Path) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], ServiceRecord]]]:
    """Start a detached process tree the way ``up`` does; returns (process, its record)."""
    started: list[tuple[subprocess.Popen[bytes], ServiceRecord]] = []

    def start(name: str) -> tuple[subprocess.Popen[bytes], ServiceRecord]:
        log = tmp_path / f"{name}.log"
        proc = _process.spawn([sys.executable, "-c", TREE], {}, log, cwd=tmp_path)
        _wait_for(lambda: "ready" in log.read_text() and len(psutil.Process(proc.pid).children(recursive=True)) == 2)
        rec = ServiceRecord(
            name=name,
            pid=proc.pid,
            pgid=proc.pid,
            port=0,
            url="-",
            health_url="http://127.0.0.1:9/",
            log=str(log),
            started_at="",
            create_time=_process.create_time(proc.pid),
        )
        started.append((proc, rec))
        return proc, rec

    yield start
    for proc, rec in started:
        _process.stop([rec], timeout=5)
        proc.wait()


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")
