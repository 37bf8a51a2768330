from __future__ import annotations

import json
import re

from tests.unit.cli.conftest import PASSWORD, Cli


def generated_password(stdout: str) -> str:
    m = re.search(r"^password: (\S+)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def test_create_list_disable_enable(cli: Cli) -> None:
    cli.login_admin()
    r = cli.ok("user", "create", "alice")
    assert "created user alice" in r.stdout
    assert "shown only once" in r.stderr
    alice_password = generated_password(r.stdout)

    r = cli.ok("user", "create", "root2", "--admin", "--password-stdin", input=PASSWORD + "\n")
    assert "created admin root2" in r.stdout and "password:" not in r.stdout

    table = cli.ok("user", "list").stdout
    assert all(name in table for name in ("admin", "alice", "root2"))
    users = {u["name"]: u for u in cli.json("user", "list")}
    assert set(users) == {"admin", "alice", "root2"}
    assert users["root2"]["is_admin"] and not users["alice"]["is_admin"]
    assert all("password" not in u for u in users.values())

    assert "disabled user alice" in cli.ok("user", "disable", "alice").stdout
    assert cli.json("user", "list")[1]["disabled"] is True
    r = cli.fails("login", "--username", "alice", "--password-stdin", input=alice_password + "\n")
    assert "disabled" in r.stderr
    cli.login_admin()
    assert "enabled user alice" in cli.ok("user", "enable", "alice").stdout
    cli.login("alice", alice_password)
    assert cli.json("whoami")["user"]["name"] == "alice"


def test_create_json_carries_the_generated_password(cli: Cli) -> None:
    cli.login_admin()
    created = cli.json("user", "create", "bob")
    assert created["name"] == "bob" and len(created["password"]) >= 12
    cli.login("bob", created["password"])


def test_reset_password(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login_admin()
    r = cli.ok("user", "reset-password", "alice")
    assert "reset the password of alice" in r.stdout
    new = generated_password(r.stdout)
    assert new != PASSWORD
    cli.fails("login", "--username", "alice", "--password-stdin", input=PASSWORD + "\n")
    cli.login("alice", new)
    cli.login_admin()
    r = cli.ok("user", "reset-password", "alice", "--password-stdin", input="chosen-by-the-admin\n")
    assert "password:" not in r.stdout
    cli.login("alice", "chosen-by-the-admin")


def test_user_errors(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login_admin()
    assert "'Bad_Name'" in cli.fails("user", "create", "Bad_Name").stderr
    assert "alice" in cli.fails("user", "create", "alice").stderr  # exists already
    assert "nobody" in cli.fails("user", "disable", "nobody").stderr
    assert "your own account" in cli.fails("user", "disable", "admin").stderr
    cli.login("alice", PASSWORD)
    r = cli.fails("user", "list")
    assert "admin" in r.stderr  # admins only
    cli.fails("user", "create", code=2)


def test_user_list_json_parses(cli: Cli) -> None:
    cli.login_admin()
    r = cli.ok("user", "list", "--json")
    assert [u["name"] for u in json.loads(r.stdout)] == ["admin"]
