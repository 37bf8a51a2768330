"""The prediction log on a real control plane and object store: buffered rows reach their datasets, a
clean shutdown writes what is left, a failed write is tried again, and a full buffer drops the oldest."""

from __future__ import annotations

import time

import pytest

from selfserve.serving import predlog as predlog_module
from selfserve.serving.gateway import Target
from selfserve.serving.predlog import PredictionLog
from selfserve.store.tables import Project
from tests.support import Platform

STORE_INDEPENDENT = True
TARGET = Target("v1", "clf", 4, "ready", "http://unused", (("age", "long"),))


@pytest.fixture
def project(sqlite_platform: Platform) -> tuple[int, str]:
    admin = sqlite_platform.admin()
    admin.projects.create("churn")
    with sqlite_platform.store.session() as s:
        proj = s.query(Project).filter_by(name="churn").one()
        return proj.id, proj.name


def _log(platform: Platform, **settings: object) -> PredictionLog:
    s = platform.settings.model_copy(deep=True)
    for key, value in settings.items():
        setattr(s.serving, key, value)
    return PredictionLog(s, platform.store, platform.app.state.object_store)


def _add(log: PredictionLog, project: tuple[int, str], request_id: str, n: int = 2) -> None:
    rows = [{"age": i} for i in range(n)]
    log.add_predictions(*project, "score", request_id, TARGET, False, rows, [i % 2 for i in range(n)], 3.5, None)


def test_a_clean_shutdown_writes_what_is_buffered(sqlite_platform: Platform, project: tuple[int, str]) -> None:
    log = _log(sqlite_platform, log_flush_seconds=3600.0)  # the timer never fires in this test
    log.start()
    _add(log, project, "r1", 3)
    log.add_labels(*project, "score", [("r1", 1), ("r2", "yes")])
    assert log.buffered == 5
    log.close()
    assert (log.buffered, log.written, log.dropped) == (0, 5, 0)
    admin = sqlite_platform.admin()
    rows = admin.datasets.query(
        "churn", "SELECT request_id, row, model_version, inputs, prediction FROM predictions_score"
    )
    assert sorted(rows.rows) == [
        ["r1", 0, 4, '{"age":0}', "0"],
        ["r1", 1, 4, '{"age":1}', "1"],
        ["r1", 2, 4, '{"age":2}', "0"],
    ]
    labels = admin.datasets.query("churn", "SELECT request_id, label FROM feedback_score ORDER BY request_id")
    assert labels.rows == [["r1", "1"], ["r2", '"yes"']]
    usage = {i.resource: i.amount for i in admin.quotas.usage("churn").items}
    assert usage["predictions"] == 3, "live predictions are counted; labels are not"


def test_the_writer_flushes_on_its_own_and_when_the_buffer_fills(
    sqlite_platform: Platform, project: tuple[int, str]
) -> None:
    log = _log(sqlite_platform, log_flush_seconds=3600.0, log_flush_rows=4)
    log.start()
    try:
        _add(log, project, "r1", 2)
        assert log._wake.is_set() is False
        _add(log, project, "r2", 2)  # 4 rows: the writer is woken at once
        for _ in range(200):
            if log.written == 4:
                break
            time.sleep(0.05)
        assert log.written == 4
    finally:
        log.close()


def test_a_failed_write_is_tried_again_and_then_lands(sqlite_platform: Platform, project: tuple[int, str]) -> None:
    admin = sqlite_platform.admin()
    admin.quotas.set("churn", {"storage": 0})  # every write is refused
    log = _log(sqlite_platform)
    _add(log, project, "r1", 2)
    assert log.flush() == 0
    assert (log.buffered, log.dropped) == (2, 0), "the rows wait for the next flush"
    admin.quotas.set("churn", {"storage": "1GB"})
    _add(log, project, "r2", 1)
    assert log.flush() == 3
    assert admin.datasets.query("churn", "SELECT count(*) FROM predictions_score").rows == [[3]]


def test_rows_are_dropped_after_repeated_failures_or_when_the_buffer_is_full(
    sqlite_platform: Platform, project: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_platform.admin().quotas.set("churn", {"storage": 0})
    log = _log(sqlite_platform)
    _add(log, project, "r1", 2)
    for _ in range(predlog_module.MAX_ATTEMPTS):
        log.flush()
    assert (log.buffered, log.dropped) == (0, 2)
    monkeypatch.setattr(predlog_module, "MAX_BUFFERED", 5)
    for i in range(4):
        _add(log, project, f"x{i}", 2)
    assert (log.buffered, log.dropped) == (5, 5)
