from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfserve.cli import app
from selfserve.settings import get_client_settings
from tests.support import free_port
from tests.unit.cli.conftest import PASSWORD, Cli


def credentials() -> Path:
    return get_client_settings().config_dir / "credentials.json"


def test_login_whoami_logout_round_trip(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli.login_admin()
    assert f"logged in as admin (platform admin) at {cli.url}" in r.stdout
    assert str(credentials()) in r.stdout
    assert stat.S_IMODE(credentials().stat().st_mode) == 0o600
    saved = json.loads(credentials().read_text())
    assert saved["user"] == "admin" and saved["url"] == cli.url and saved["token"].startswith("ss_")

    cli.ok("project", "create", "churn")
    out = cli.ok("whoami").stdout
    assert "admin" in out and "yes" in out and "churn" in out and "owner" in out
    me = cli.json("whoami")
    assert me["user"]["name"] == "admin" and me["user"]["is_admin"] is True
    assert me["token"]["expires_at"] is not None and me["token"]["kind"] == "session"
    assert me["projects"] == [{"project": "churn", "role": "owner"}]
    assert me["url"] == cli.url

    assert cli.ok("logout").stdout.strip() == f"logged out of {cli.url}"
    assert not credentials().exists()
    r = cli.fails("whoami")
    assert "not logged in" in r.stderr and "selfserve login" in r.stderr
    # The session token was revoked on the server, not only forgotten here.
    monkeypatch.setenv("SELFSERVE_TOKEN", saved["token"])
    assert "revoked" in cli.fails("whoami").stderr


def test_login_prompts_for_user_name_and_password(cli: Cli) -> None:
    r = cli.ok("login", input=f"admin\n{cli.platform.admin_password}\n")
    assert "User name" in r.stdout and "Password" in r.stdout
    assert cli.platform.admin_password not in r.stdout  # the password prompt does not echo
    assert cli.json("whoami")["user"]["name"] == "admin"


def test_login_with_a_wrong_password_saves_nothing(cli: Cli) -> None:
    r = cli.fails("login", "--username", "admin", "--password-stdin", input="not-the-password\n")
    assert "password" in r.stderr.lower()
    assert not credentials().exists()


def test_login_url_option_is_saved_and_used_later(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELFSERVE_URL")
    r = cli.ok(
        "login",
        "--url",
        cli.url,
        "--username",
        "admin",
        "--password-stdin",
        "--json",
        input=cli.platform.admin_password + "\n",
    )
    data = json.loads(r.stdout)
    assert data["url"] == cli.url and data["user"]["name"] == "admin" and data["credentials"] == str(credentials())
    assert cli.json("whoami")["url"] == cli.url  # no SELFSERVE_URL: the saved login's URL


def test_not_logged_in(cli: Cli) -> None:
    for args in (["whoami"], ["project", "list"], ["token", "list"], ["audit"]):
        assert "not logged in: run `selfserve login`" in cli.fails(*args).stderr


def test_unreachable_api_exits_3_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SELFSERVE_URL", url)
    monkeypatch.setenv("SELFSERVE_TOKEN", "ss_nothing")
    r = CliRunner().invoke(app, ["whoami"])
    assert r.exit_code == 3, r.output
    assert r.stderr.startswith(f"error: cannot reach the selfserve API at {url}") and "selfserve up" in r.stderr
    assert "Traceback" not in r.output


def test_change_password(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    new = "a-new-password-of-length"
    assert "password changed" in cli.ok("password", "--password-stdin", input=f"{PASSWORD}\n{new}\n").stdout
    assert cli.json("whoami")["user"]["name"] == "alice"  # the session in use survives
    cli.fails("login", "--username", "alice", "--password-stdin", input=PASSWORD + "\n")
    cli.login("alice", new)


def test_change_password_interactively(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    new = "a-new-password-of-length"
    cli.ok("password", input=f"{PASSWORD}\n{new}\n{new}\n")
    cli.login("alice", new)


def test_change_password_refusals(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    r = cli.fails("password", "--password-stdin", input="wrong-current-password\nanother-long-password\n")
    assert "current password is wrong" in r.stderr
    r = cli.fails("password", "--password-stdin", input=f"{PASSWORD}\nshort\n")
    assert "new_password" in r.stderr and "12" in r.stderr


def test_logout_after_the_session_ended_elsewhere(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.platform.admin().users.reset_password("alice")  # revokes every token of alice's
    assert "already ended" in cli.ok("logout").stdout
    assert not credentials().exists()
    assert cli.ok("logout").stdout.strip() == "not logged in"
