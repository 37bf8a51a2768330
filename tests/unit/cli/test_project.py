from __future__ import annotations

from tests.unit.cli.conftest import PASSWORD, Cli


def test_create_list_show_delete(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    r = cli.ok("project", "create", "churn", "--description", "churn models")
    assert "created project churn" in r.stdout and "you are its owner" in r.stdout
    created = cli.json("project", "create", "fraud")
    assert created["name"] == "fraud" and created["role"] == "owner" and created["created_by"] == "alice"

    table = cli.ok("project", "list").stdout
    assert "churn" in table and "fraud" in table and "churn models" in table
    assert [p["name"] for p in cli.json("project", "list")] == ["churn", "fraud"]

    shown = cli.ok("project", "show", "churn").stdout
    assert "churn models" in shown and "provisioning:" in shown
    assert cli.json("project", "show", "churn")["status"] == "ready"

    r = cli.fails("project", "delete", "churn")
    assert "--yes" in r.stderr
    cli.ok("project", "show", "churn")  # still there
    assert cli.ok("project", "delete", "churn", "--yes").stdout.strip() == "deleted project churn"
    assert "churn" in cli.fails("project", "show", "churn").stderr
    assert [p["name"] for p in cli.json("project", "list")] == ["fraud"]


def test_project_errors(cli: Cli) -> None:
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    assert "'Churn'" in cli.fails("project", "create", "Churn").stderr
    cli.ok("project", "create", "churn")
    assert "churn" in cli.fails("project", "create", "churn").stderr  # exists already
    cli.login("bob", PASSWORD)
    # Bob is not a member: the project is invisible to him, not forbidden.
    assert "not found" in cli.fails("project", "show", "churn").stderr
    assert "not found" in cli.fails("project", "delete", "churn", "--yes").stderr
    assert cli.ok("project", "list").stdout.strip() == "(none)"
    cli.fails("project", "show", code=2)
