"""Sources through the SDK: add, list, show, test, remove; secrets encrypted at rest, never returned."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from selfserve.client import Client
from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from selfserve.policy import secrets
from selfserve.settings import get_settings
from selfserve.store.tables import Source
from tests.support import Platform

P = "sales"
PASSWORD = "s3cr3t-Pa55-word"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the admin opened to file and sqlite sources, holding a small SQLite database."""
    root = tmp_path / "files"
    root.mkdir()
    with sqlite3.connect(root / "shop.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, amount REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 1.5) for i in range(5)])
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(root)]))
    get_settings.cache_clear()
    return root


@pytest.fixture
def owner(platform: Platform) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    return alice


def stored(platform: Platform, name: str) -> Source:
    with platform.store.session() as s:
        row = s.scalar(select(Source).where(Source.name == name))
        assert row is not None
        return row


def test_add_list_show_test_remove(owner: Client, files: Path) -> None:
    src = owner.sources.add(P, "shop", "sqlite", {"path": str(files / "shop.db")})
    assert (src.name, src.kind, src.config, src.secrets) == ("shop", "sqlite", {"path": str(files / "shop.db")}, [])
    assert [s.name for s in owner.sources.list(P)] == ["shop"]
    assert owner.sources.get(P, "shop").created_by == "alice"
    ok = owner.sources.test(P, "shop")
    assert ok.ok and "reachable" in ok.message
    with pytest.raises(Conflict):
        owner.sources.add(P, "shop", "sqlite", {"path": str(files / "shop.db")})
    owner.sources.remove(P, "shop")
    assert owner.sources.list(P) == []
    with pytest.raises(NotFound):
        owner.sources.get(P, "shop")


def test_a_source_outside_the_open_directories_is_refused(owner: Client, files: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    sqlite3.connect(elsewhere).close()
    owner.sources.add(P, "outside", "sqlite", {"path": str(elsewhere)})
    result = owner.sources.test(P, "outside")
    assert not result.ok


def test_bad_sources_are_refused(owner: Client, files: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown source kind"):
        owner.sources.add(P, "x", "ftp", {})
    with pytest.raises(InvalidInput):
        owner.sources.add(P, "x", "sqlite", {"path": str(files / "shop.db"), "bogus": 1})
    with pytest.raises(InvalidInput, match="unknown secret"):
        owner.sources.add(P, "x", "sqlite", {"path": str(files / "shop.db")}, secrets={"password": "x"})
    with pytest.raises(InvalidInput):
        owner.sources.add(P, "../x", "sqlite", {"path": str(files / "shop.db")})
    assert owner.sources.list(P) == []


def test_secrets_are_encrypted_at_rest_and_never_returned(platform: Platform, owner: Client) -> None:
    config = {"host": "127.0.0.1", "database": "test", "user": "postgres"}
    src = owner.sources.add(P, "warehouse", "postgres", config, secrets={"password": PASSWORD})
    assert src.secrets == ["password"] and "password" not in src.config
    assert PASSWORD not in src.model_dump_json()
    assert PASSWORD not in owner.sources.get(P, "warehouse").model_dump_json()
    row = stored(platform, "warehouse")
    assert row.secret and PASSWORD not in row.secret and PASSWORD not in json.dumps(row.config)
    assert secrets.decrypt(row.secret) == {"password": PASSWORD}  # the value itself, not a mask of it


def test_a_password_given_in_the_config_or_url_moves_to_the_secrets(platform: Platform, owner: Client) -> None:
    owner.sources.add(P, "in-config", "postgres", {"host": "127.0.0.1", "database": "test", "password": PASSWORD})
    owner.sources.add(P, "in-url", "postgres", {"url": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"})
    for name in ("in-config", "in-url"):
        shown = owner.sources.get(P, name)
        assert shown.secrets == ["password"] and PASSWORD not in shown.model_dump_json()
        row = stored(platform, name)
        assert PASSWORD not in json.dumps(row.config)
        assert secrets.decrypt(row.secret) == {"password": PASSWORD}


def test_a_viewer_sees_sources_but_cannot_change_them(platform: Platform, owner: Client, files: Path) -> None:
    owner.sources.add(P, "shop", "sqlite", {"path": str(files / "shop.db")})
    vic = platform.user("vic")
    owner.members.add(P, "vic", "viewer")
    assert [s.name for s in vic.sources.list(P)] == ["shop"]
    with pytest.raises(PermissionDenied):
        vic.sources.remove(P, "shop")
    with pytest.raises(PermissionDenied):
        vic.sources.add(P, "other", "sqlite", {"path": str(files / "shop.db")})
    outsider = platform.user("otto")
    with pytest.raises(NotFound):
        outsider.sources.list(P)
