"""Fixtures of the data suites: a platform whose storage is a local directory or an S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selfserve.settings import get_settings
from tests.support import MotoS3, Platform, make_platform


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server over HTTP for the session; each test takes its own bucket."""
    with MotoS3() as s3:
        yield s3


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the platform's storage at a local directory, or at a fresh bucket on the moto S3 server."""
    if request.param == "s3":
        s3: MotoS3 = request.getfixturevalue("moto_s3")
        for key, value in s3.env(s3.new_bucket()).items():
            monkeypatch.setenv(key, value)
    else:
        monkeypatch.setenv("SELFSERVE_STORAGE__URL", str(tmp_path / "objects"))
    get_settings.cache_clear()
    return str(request.param)


@pytest.fixture
def data_platform(storage: str, db_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A fresh control plane on each metadata DB and each storage kind."""
    p = make_platform(tmp_path / "home", db_url)
    try:
        yield p
    finally:
        p.close()
