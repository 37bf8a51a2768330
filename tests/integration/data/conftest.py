"""Fixtures of the data integration suites: the platform's storage on a moto S3 server over HTTP."""

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


@pytest.fixture
def bucket(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with the platform's storage settings pointing at it."""
    name = moto_s3.new_bucket()
    for key, value in moto_s3.env(name).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return name


@pytest.fixture
def s3_platform(bucket: str, db_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A control plane whose storage is the bucket, on each metadata DB."""
    p = make_platform(tmp_path / "home", db_url)
    try:
        yield p
    finally:
        p.close()
