from __future__ import annotations

from tests.unit.cli.conftest import PASSWORD, Cli
from tests.unit.cli.test_quota import use_storage


def test_show(cli: Cli) -> None:
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    assert cli.ok("usage", "show", "churn").stdout.strip() == "(none)"
    assert cli.json("usage", "show", "churn") == {"project": "churn", "items": []}

    use_storage(cli, "churn", 1.5e9)
    table = cli.ok("usage", "show", "churn").stdout
    assert "usage of churn" in table and "storage" in table and "1.5 GB" in table
    items = cli.json("usage", "show", "churn")["items"]
    assert [(i["resource"], i["amount"], i["shown"]) for i in items] == [("storage", 1.5e9, "1.5 GB")]

    cli.login("bob", PASSWORD)
    assert "project 'churn' not found" in cli.fails("usage", "show", "churn").stderr
