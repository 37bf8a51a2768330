from __future__ import annotations

from pathlib import Path

import pytest

from selfserve.errors import Conflict, SelfServeError
from selfserve.runtime import _state
from selfserve.runtime._state import ServiceRecord, State


def _record(name: str = "api") -> ServiceRecord:
    return ServiceRecord(
        name=name,
        pid=123,
        pgid=123,
        port=8700,
        url="http://127.0.0.1:8700",
        health_url="http://127.0.0.1:8700/api/v1/health",
        log="/tmp/api.log",
        started_at="2026-01-01T00:00:00+00:00",
        create_time=1.5,
        ready_seconds=2.0,
    )


def test_state_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = _state.state_path(tmp_path / "run")
    assert _state.load(path) is None
    state = State(services=[_record("api"), _record("console")], started_at="now")
    _state.save(path, state)
    assert _state.load(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    assert state.get("console") == _record("console")
    assert state.get("nope") is None
    _state.remove(path)
    _state.remove(path)
    assert _state.load(path) is None


@pytest.mark.parametrize("text", ["{not json", '{"services": [{"name": "api"}]}', "[]"])
def test_unreadable_state_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(SelfServeError, match="state.json"):
        _state.load(path)


def test_the_lock_admits_one_supervisor_at_a_time(tmp_path: Path) -> None:
    with _state.locked(tmp_path), pytest.raises(Conflict, match="in progress"), _state.locked(tmp_path):
        pass
    with _state.locked(tmp_path):
        pass
