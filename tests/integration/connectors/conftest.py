"""Fixtures for the connector suites: settings with an allowed file root, a closed port, readers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.data.connectors import Connector, ReadRequest
from selfserve.settings import Settings, get_settings
from tests.support import free_port


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A directory the admin opened to file sources."""
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def settings(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with ``root`` in ``data.file_roots`` (private URLs allowed, the embedded default)."""
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(root)]))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.fixture
def unique() -> str:
    """A name no other test uses (for tables, keys, streams)."""
    return f"ss_{uuid.uuid4().hex[:10]}"


def read_all(connector: Connector, request: ReadRequest | None = None, **kwargs: object) -> tuple[pa.Table, list[int]]:
    """Every batch of a read as one table, and the batch sizes; the read is then committed, as the
    ingest does once the rows are written."""
    batches = list(connector.read(request or ReadRequest(**kwargs)))  # type: ignore[arg-type]
    connector.commit()
    sizes = [b.num_rows for b in batches]
    if not batches:
        return pa.table({}), sizes
    return pa.Table.from_batches(batches), sizes
