from __future__ import annotations

from tests.unit.cli.conftest import PASSWORD, Cli


def test_add_list_set_role_remove(cli: Cli) -> None:
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")

    assert cli.ok("member", "add", "churn", "bob", "--role", "viewer").stdout.strip() == "added bob to churn as viewer"
    table = cli.ok("member", "list", "churn").stdout
    assert "alice" in table and "owner" in table and "bob" in table and "viewer" in table
    members = {m["user"]: m["role"] for m in cli.json("member", "list", "churn") if m["kind"] == "user"}
    assert members == {"alice": "owner", "bob": "viewer"}

    assert cli.ok("member", "set-role", "churn", "bob", "engineer").stdout.strip() == "bob is now engineer in churn"
    assert cli.json("member", "set-role", "churn", "bob", "scientist")["role"] == "scientist"

    cli.login("bob", PASSWORD)
    assert cli.json("whoami")["projects"] == [{"project": "churn", "role": "scientist"}]
    cli.login("alice", PASSWORD)
    assert cli.ok("member", "remove", "churn", "bob").stdout.strip() == "removed bob from churn"
    assert "bob" not in {m["user"] for m in cli.json("member", "list", "churn")}
    cli.login("bob", PASSWORD)
    assert "not found" in cli.fails("member", "list", "churn").stderr


def test_member_errors(cli: Cli) -> None:
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    assert "wizard" in cli.fails("member", "add", "churn", "bob", "--role", "wizard").stderr
    assert "nobody" in cli.fails("member", "add", "churn", "nobody", "--role", "viewer").stderr
    assert "--role" in cli.fails("member", "add", "churn", "bob", code=2).output
    cli.ok("member", "add", "churn", "bob", "--role", "viewer")
    cli.login("bob", PASSWORD)
    r = cli.fails("member", "set-role", "churn", "bob", "owner")
    assert "member:write" in r.stderr or "not allowed" in r.stderr
