from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli.conftest import PASSWORD, Cli


@pytest.fixture
def owners(cli: Cli, tmp_path: Path) -> Cli:
    """Alice owns ``churn`` with dataset ``features`` (3 rows); bob owns ``fraud``. Logged in: alice."""
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("bob", PASSWORD)
    cli.ok("project", "create", "fraud")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    (tmp_path / "features.csv").write_text("customer_id,score\n1,0.2\n2,0.9\n3,0.4\n")
    cli.ok("dataset", "upload", "churn", str(tmp_path / "features.csv"), "--to", "features")
    return cli


def test_publish_search_request_grant_revoke(owners: Cli) -> None:
    cli = owners
    r = cli.ok(
        "product",
        "publish",
        "churn",
        "features",
        "--description",
        "Churn scores per customer",
        "--sla-freshness",
        "24h",
        "--tag",
        "churn",
        "--tag",
        "Scores",
    )
    assert r.stdout.startswith("published churn/features;")
    assert cli.json("dataset", "show", "churn", "features")["published"] is True

    cli.login("bob", PASSWORD)
    (found,) = cli.json("product", "search", "scores")
    assert found["project"] == "churn" and found["dataset"] == "features" and found["owner"] == "alice"
    assert found["tags"] == ["churn", "scores"] and found["sla_freshness_seconds"] == 86400
    assert found["freshness"] == "fresh"
    table = cli.ok("product", "search").stdout
    assert "churn/features" in table and "fresh (24h)" in table and "Churn scores" in table
    assert cli.json("product", "search", "--tag", "churn")[0]["dataset"] == "features"
    assert cli.json("product", "search", "nothing-like-this") == []
    assert cli.ok("product", "search", "nothing-like-this").stdout.strip() == "(none)"

    # Bob cannot read it from fraud before the grant.
    sql = "select count(*) as n from churn.features"
    assert cli.fails("dataset", "query", "fraud", sql).stderr.startswith("error: ")
    r = cli.ok("product", "request", "churn/features", "--for", "fraud", "--reason", "fraud features")
    assert r.stdout.splitlines() == [
        "access request 1: fraud -> churn/features is requested",
        "the owners of the product decide it",
    ]
    assert "already requested" in cli.fails("product", "request", "churn/features", "--for", "fraud").stderr
    assert cli.json("product", "search")[0]["access"] == "requested"
    assert "requested" in cli.ok("product", "search").stdout  # the access column shows once there is any
    assert "not found" in cli.fails("product", "requests", "churn").stderr  # bob is not in churn

    cli.login("alice", PASSWORD)
    (pending,) = cli.json("product", "requests", "churn", "--status", "requested")
    assert pending["consumer"] == "fraud" and pending["requested_by"] == "bob" and pending["reason"] == "fraud features"
    assert "fraud" in cli.ok("product", "requests", "churn").stdout
    assert cli.ok("product", "grant", "churn", "1").stdout.strip() == (
        "access request 1: fraud -> churn/features is granted"
    )
    assert cli.json("product", "requests", "churn", "--status", "requested") == []

    cli.login("bob", PASSWORD)
    assert cli.json("dataset", "query", "fraud", sql)["rows"] == [[3]]
    assert cli.json("product", "search")[0]["access"] == "granted"

    cli.login("alice", PASSWORD)
    assert cli.json("product", "revoke", "churn", "1")["status"] == "revoked"
    assert "cannot revoke" in cli.fails("product", "revoke", "churn", "1").stderr
    cli.login("bob", PASSWORD)
    cli.fails("dataset", "query", "fraud", sql)

    cli.login("alice", PASSWORD)
    assert cli.ok("product", "unpublish", "churn", "features").stdout.strip() == "unpublished churn/features"
    assert cli.json("product", "search") == []
    assert "not published" in cli.fails("product", "unpublish", "churn", "features").stderr


def test_deny(owners: Cli) -> None:
    cli = owners
    cli.ok("product", "publish", "churn", "features")
    cli.login("bob", PASSWORD)
    assert cli.json("product", "request", "churn/features", "--for", "fraud")["status"] == "requested"
    cli.login("alice", PASSWORD)
    assert cli.json("product", "deny", "churn", "1")["status"] == "denied"
    assert "cannot deny" in cli.fails("product", "deny", "churn", "1").stderr
    assert cli.json("product", "requests", "churn", "--status", "denied")[0]["decided_by"] == "alice"


def test_product_errors(owners: Cli) -> None:
    cli = owners
    cli.fails("product", "request", "features", "--for", "fraud", code=2)
    cli.fails("product", "request", "churn/features/x", "--for", "fraud", code=2)
    cli.fails("product", "request", "churn/features", code=2)
    cli.fails("product", "requests", "churn", "--status", "maybe", code=2)
    cli.fails("product", "grant", "churn", "one", code=2)

    assert "not found" in cli.fails("product", "publish", "churn", "nope").stderr
    r = cli.fails("product", "publish", "churn", "features", "--sla-freshness", "soon")
    assert "soon" in r.stderr
    assert (
        "no published product churn/features"
        in cli.fails("product", "request", "churn/features", "--for", "churn").stderr
    )
    cli.ok("product", "publish", "churn", "features")
    assert "already belongs" in cli.fails("product", "request", "churn/features", "--for", "churn").stderr
    assert "not found" in cli.fails("product", "request", "churn/features", "--for", "fraud").stderr  # not alice's
    assert "not found" in cli.fails("product", "grant", "churn", "42").stderr
