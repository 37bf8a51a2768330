from __future__ import annotations

from datetime import timedelta

from selfserve.store.tables import AuditEvent, utcnow
from tests.unit.cli.conftest import PASSWORD, Cli


def test_audit_with_filters(cli: Cli) -> None:
    cli.add_user("alice")
    cli.add_user("bob")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    cli.ok("member", "add", "churn", "bob", "--role", "viewer")
    cli.login("bob", PASSWORD)
    cli.fails("member", "add", "churn", "bob", "--role", "owner")  # a denial is audited too
    with cli.platform.store.begin() as session:
        session.add(
            AuditEvent(
                at=utcnow() - timedelta(hours=3),
                principal="alice",
                action="project:update",
                project="churn",
                target="churn",
                outcome="ok",
            )
        )

    cli.login("alice", PASSWORD)
    table = cli.ok("audit", "--project", "churn").stdout
    assert "project:create" in table and "member:write" in table and "bob" in table

    events = cli.json("audit", "--project", "churn")
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)  # newest first
    assert {e["project"] for e in events} == {"churn"}
    assert {"project:create", "project:update"} <= {e["action"] for e in events}
    denied = [e for e in events if e["principal"] == "bob"]
    assert denied and all(e["outcome"] != "ok" for e in denied)

    by_bob = cli.json("audit", "--project", "churn", "--user", "bob")
    assert by_bob and {e["principal"] for e in by_bob} == {"bob"}
    recent = cli.json("audit", "--project", "churn", "--since", "1h")
    assert "project:update" not in {e["action"] for e in recent} and "project:create" in {e["action"] for e in recent}
    assert len(cli.json("audit", "--project", "churn", "--since", "4h")) == len(events)
    assert cli.json("audit", "--project", "churn", "--since", "2999-01-01T00:00:00") == []
    assert len(cli.json("audit", "--project", "churn", "--limit", "2")) == 2

    assert "invalid since 'yesterday'" in cli.fails("audit", "--project", "churn", "--since", "yesterday").stderr
    assert "audit:read-all" in cli.fails("audit").stderr  # the whole platform's trail: admins only
    cli.fails("audit", "--limit", "0", code=2)
    cli.fails("audit", "list", code=2)  # a plain command: no verbs

    cli.login("bob", PASSWORD)
    assert "audit:read" in cli.fails("audit", "--project", "churn").stderr  # viewers may not read the trail

    cli.login_admin()
    every = cli.json("audit", "--user", "alice")
    assert {"auth:login", "project:create"} <= {e["action"] for e in every}
    assert {e["principal"] for e in every} == {"alice"}
