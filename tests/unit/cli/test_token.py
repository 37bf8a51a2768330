from __future__ import annotations

import re

import pytest

from tests.unit.cli.conftest import PASSWORD, Cli


def test_create_list_use_revoke(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    r = cli.ok("token", "create", "--name", "ci", "--expires", "30d")
    assert "will not be shown again" in r.stderr
    m = re.search(r"^created token (\d+) \(ci\) for all your projects; it expires .+$", r.stdout, re.M)
    assert m, r.stdout
    token_id = int(m.group(1))
    token = re.search(r"^(ss_\S+)$", r.stdout, re.M)
    assert token, r.stdout

    listing = cli.ok("token", "list").stdout
    assert "ci" in listing and token.group(1)[:10] in listing
    assert token.group(1) not in listing  # only the prefix is ever listed again
    rows = {t["id"]: t for t in cli.json("token", "list")}
    assert rows[token_id]["name"] == "ci" and rows[token_id]["revoked_at"] is None
    assert all("token" not in t for t in rows.values())

    monkeypatch.setenv("SELFSERVE_TOKEN", token.group(1))
    me = cli.json("whoami")
    assert me["user"]["name"] == "alice" and me["token"]["id"] == token_id and me["token"]["kind"] == "api"

    monkeypatch.delenv("SELFSERVE_TOKEN")
    assert cli.ok("token", "revoke", str(token_id)).stdout.strip() == f"revoked token {token_id}"
    assert {t["id"]: t for t in cli.json("token", "list")}[token_id]["revoked_at"] is not None
    monkeypatch.setenv("SELFSERVE_TOKEN", token.group(1))
    r = cli.fails("whoami")
    assert r.stderr.strip() == "error: token has been revoked"


def test_project_scoped_token(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    cli.ok("project", "create", "fraud")
    created = cli.json("token", "create", "--project", "churn")
    assert created["project"] == "churn" and created["token"].startswith("ss_") and created["name"] == "api"
    monkeypatch.setenv("SELFSERVE_TOKEN", created["token"])
    assert [p["project"] for p in cli.json("whoami")["projects"]] == ["churn"]
    cli.ok("project", "show", "churn")
    assert "fraud" in cli.fails("project", "show", "fraud").stderr
    cli.fails("token", "create")  # a scoped token cannot mint tokens


def test_token_errors(cli: Cli) -> None:
    cli.login_admin()
    assert "forever" in cli.fails("token", "create", "--expires", "forever").stderr
    assert "token 999 not found" in cli.fails("token", "revoke", "999").stderr
    assert "nope" in cli.fails("token", "create", "--project", "nope").stderr
    r = cli.fails("token", "revoke", "abc", code=2)
    assert "Invalid value for 'ID'" in r.output
