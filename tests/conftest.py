"""Shared fixtures. Every test gets its own SELFSERVE_HOME and config dir; nothing touches ~."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfserve.settings import get_settings
from tests.support import Platform, make_platform, postgres_database

PG_ENV = "SELFSERVE_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("SELFSERVE_") and key not in (PG_ENV, "SELFSERVE_CONFIG_FILE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SELFSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SELFSERVE_CONFIG_DIR", str(tmp_path / "config"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


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
