"""The audit trail is append-only down to the database, and readable by owners and admins only."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from selfserve.errors import NotFound, PermissionDenied
from selfserve.policy import audit
from selfserve.store.tables import AuditEvent
from tests.support import Platform


def _events(platform: Platform) -> list[tuple[int, str, str, str | None, str]]:
    with platform.store.session() as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.id, e.principal, e.action, e.project, e.outcome) for e in rows]


def test_update_and_delete_are_refused_by_the_database(platform: Platform) -> None:
    with platform.store.begin() as s:
        audit.record(s, "alice", "project:update", project="churn", target="churn")
    before = _events(platform)
    assert len(before) >= 2
    statements = [
        text("UPDATE audit_events SET outcome = 'forged'"),
        text("DELETE FROM audit_events"),
        update(AuditEvent).where(AuditEvent.principal == "alice").values(principal="mallory"),
        delete(AuditEvent).where(AuditEvent.principal == "alice"),
    ]
    for stmt in statements:
        with pytest.raises(DBAPIError, match="append-only"), platform.store.begin() as s:
            s.execute(stmt)
    # Through the ORM as well.
    with pytest.raises(DBAPIError, match="append-only"), platform.store.begin() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.principal == "alice"))
        s.delete(event)
    with pytest.raises(DBAPIError, match="append-only"), platform.store.begin() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.principal == "alice"))
        assert event is not None
        event.outcome = "forged"
    assert _events(platform) == before
    # Appending still works.
    with platform.store.begin() as s:
        audit.record(s, "alice", "project:read", project="churn")
    with platform.store.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == len(before) + 1


def test_changes_and_denials_are_recorded(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    bob = platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    alice.members.add("churn", "bob", "viewer")
    with pytest.raises(PermissionDenied):
        bob.members.add("churn", "admin", "viewer")
    with pytest.raises(NotFound):
        bob.projects.delete("nowhere")
    events = [(p, a, proj, o) for _, p, a, proj, o in _events(platform)]
    assert ("alice", "project:create", "churn", "ok") in events
    assert ("alice", "member:add", "churn", "ok") in events
    assert ("bob", "member:write", "churn", "denied:permission_denied") in events
    assert ("bob", "project:delete", "nowhere", "denied:not_found") in events


def test_owners_read_their_audit_other_roles_get_403_admins_read_all(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    others = {role: platform.user(role, admin_client=admin) for role in ("engineer", "scientist", "viewer")}
    carol = platform.user("carol", admin_client=admin)
    alice.projects.create("churn")
    carol.projects.create("fraud")
    for role in others:
        alice.members.add("churn", role, role)

    churn = alice.audit.list("churn")
    assert churn and {e.project for e in churn} == {"churn"}
    assert {"project:create", "member:add"} <= {e.action for e in churn}
    for role, client in others.items():
        with pytest.raises(PermissionDenied, match=f"role '{role}' may not audit:read"):
            client.audit.list("churn")
        with pytest.raises(PermissionDenied, match="audit:read-all needs a platform admin"):
            client.audit.list()
    with pytest.raises(NotFound):
        carol.audit.list("churn")
    with pytest.raises(PermissionDenied):
        alice.audit.list()

    every = admin.audit.list(limit=5000)
    assert {"churn", "fraud"} <= {e.project for e in every}
    assert admin.audit.list("fraud")
    assert {e.principal for e in admin.audit.list(user="carol")} == {"carol"}
    assert all(e.action != "project:create" or e.project == "fraud" for e in admin.audit.list(user="carol"))
    assert len(admin.audit.list(limit=2)) == 2
    assert admin.audit.list(since="1h") and not admin.audit.list(since="2999-01-01T00:00:00")
