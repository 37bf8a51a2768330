"""Shared fixtures. Every test gets its own SELFSERVE_HOME and config dir; nothing touches ~."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfserve.settings import get_settings
from tests.support import Platform, make_platform, postgres_database

PG_ENV = "SELFSERVE_TEST_POSTGRES_URL"
# The real Prefect-backed stack (`stack`, `pipeline_env`, `flow_dir`), started at most once per session.
pytest_plugins = ["tests.pipeline_stack"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("SELFSERVE_") and key not in (PG_ENV, "SELFSERVE_CONFIG_FILE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SELFSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SELFSERVE_CONFIG_DIR", str(tmp_path / "config"))
    # Without a Prefect server, pipelines are off; the pipeline suites turn them on against a real one.
    monkeypatch.setenv("SELFSERVE_PIPELINES__ENABLED", "false")
    # Likewise models: without an MLflow server they are off; the session stack turns them on.
    monkeypatch.setenv("SELFSERVE_MODELS__ENABLED", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    _reset_mlflow_globals()


def _reset_mlflow_globals() -> None:
    """MLflow's fluent API keeps the active experiment and the tracking URI in module globals; a test
    that set them must not hand them to the next test in the same process."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        fluent._active_experiment_id = None  # type: ignore[attr-defined]
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None  # type: ignore[attr-defined]


# Under xdist the worker running the serial group keeps its priority, and the servers it starts
# inherit it; the workers running the rest yield the CPU to it (nice 10), so the tests that wait on
# real servers are not starved by the ones that only compute.
SERIAL_NICE, OTHER_NICE = 0, 10


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not hasattr(item.config, "workerinput"):
        return
    nice = SERIAL_NICE if item.get_closest_marker("serial") is not None else OTHER_NICE
    with contextlib.suppress(OSError):  # lowering the value again needs CAP_SYS_NICE
        if os.getpriority(os.PRIO_PROCESS, 0) != nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)


def _backends() -> list[object]:
    return [
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set"),
            ],
        ),
    ]


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The metadata DB, on SQLite and (when SELFSERVE_TEST_POSTGRES_URL is set) on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        with postgres_database(os.environ[PG_ENV]) as url:
            yield url


@pytest.fixture
def platform(db_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A fresh control plane (migrated DB, first admin) reachable in-process through the SDK."""
    p = make_platform(tmp_path / "home", db_url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    """Like ``platform`` but on SQLite only, for tests whose subject is not the store."""
    p = make_platform(tmp_path / "home", f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        yield p
    finally:
        p.close()


# What must not run next to itself: the real stacks (Prefect, MLflow and the worker), the browser
# and the end-to-end runs. They live under these directories (the scheduler below sees only test
# ids), and are marked ``serial``.
SERIAL_PATHS = (
    "tests/browser/",
    "tests/e2e/",
    "tests/integration/ml/",
    "tests/integration/pipelines/",
    "tests/integration/serving/",
)
SERIAL_FIXTURES = {"stack", "fault_stack", "pipeline_env"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with one scope per module, except that every serial module is in one
    scope, ``serial``: a single worker runs those one at a time, from the start (run with
    ``--no-loadscope-reorder``, collection order puts them first), while the other workers take the
    remaining modules."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SerialScopeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "serial" if module.startswith(SERIAL_PATHS) else module

    return SerialScopeScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the ``serial`` tests (see ``SERIAL_PATHS``); a test that uses a real stack elsewhere is
    refused, since the scheduler would run it next to the others.

    A module whose subject does not depend on the metadata DB says so with ``STORE_INDEPENDENT =
    True``, a test with the ``store_independent`` mark: it runs on SQLite only (the store, policy and
    data-versioning suites run on both)."""
    on_postgres = [
        item
        for item in items
        if (
            getattr(getattr(item, "module", None), "STORE_INDEPENDENT", False)
            or item.get_closest_marker("store_independent") is not None
        )
        and "postgres" in getattr(getattr(item, "callspec", None), "params", {}).values()
    ]
    if on_postgres:
        config.hook.pytest_deselected(items=on_postgres)
        dropped = set(on_postgres)
        items[:] = [item for item in items if item not in dropped]
    root = Path(__file__).parent.parent
    for item in items:
        path = item.path.relative_to(root).as_posix()
        if path.startswith(SERIAL_PATHS):
            item.add_marker(pytest.mark.serial)
        elif SERIAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid} uses a real stack: move it under one of {SERIAL_PATHS}")
