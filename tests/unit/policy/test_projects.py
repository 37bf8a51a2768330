"""Project services: the per-user project limit, the last owner, and quota requests."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from selfserve.settings import get_settings
from selfserve.store.tables import Membership, Principal, Project, ProvisionStep, Quota, QuotaRequest
from tests.support import Platform


def _counts(platform: Platform) -> dict[str, int]:
    with platform.store.session() as s:
        return {
            t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
            for t in (Project, Membership, Principal, Quota, ProvisionStep, QuotaRequest)
        }


def test_project_count_limit(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_PLATFORM__MAX_PROJECTS_PER_USER", "2")
    get_settings.cache_clear()
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    alice.projects.create("one")
    alice.projects.create("two")
    before = _counts(platform)
    with pytest.raises(Conflict, match=r"you own 2 projects, the most one user may own \(2\); delete one first"):
        alice.projects.create("three")
    assert _counts(platform) == before
    # Being a member of other projects does not count; owning does.
    admin.projects.create("admins")
    admin.members.add("admins", "alice", "viewer")
    alice.projects.delete("one")
    alice.projects.create("three")
    # Admins have no limit.
    for name in ("a1", "a2", "a3"):
        admin.projects.create(name)


def test_last_owner_cannot_leave_or_be_demoted(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    with pytest.raises(Conflict, match="project 'churn' must keep at least one owner"):
        alice.members.set_role("churn", "alice", "viewer")
    with pytest.raises(Conflict, match="must keep at least one owner"):
        alice.members.remove("churn", "alice")
    with pytest.raises(Conflict, match="must keep at least one owner"):
        admin.members.remove("churn", "alice")
    alice.members.add("churn", "bob", "owner")
    alice.members.set_role("churn", "alice", "viewer")
    roles = {m.user: m.role for m in alice.members.list("churn")}
    assert roles["alice"] == "viewer" and roles["bob"] == "owner"
    with pytest.raises(PermissionDenied):
        alice.members.set_role("churn", "alice", "owner")


def test_service_account_stays(platform: Platform) -> None:
    admin = platform.admin()
    admin.projects.create("churn")
    members = {m.user: (m.kind, m.role) for m in admin.members.list("churn")}
    assert members["svc.churn"] == ("service", "service")
    with pytest.raises(InvalidInput):
        admin.members.remove("churn", "svc.churn")
    with pytest.raises(InvalidInput):
        admin.members.set_role("churn", "svc.churn", "viewer")
    with pytest.raises(NotFound, match="user 'svc-churn' not found"):
        admin.members.add("churn", "svc-churn", "viewer")


def test_quota_request_approved_changes_limits_denied_does_not(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    viewer = platform.user("vic", admin_client=admin)
    alice.projects.create("churn")
    alice.members.add("churn", "vic", "viewer")

    def limits() -> dict[str, float]:
        return {i.resource: i.limit for i in alice.quotas.get("churn").items}

    start = limits()
    with pytest.raises(PermissionDenied, match="role 'viewer' may not quota:request"):
        viewer.quotas.request("churn", {"runs": 10})
    denied = alice.quotas.request("churn", {"runs": 10}, reason="more")
    approved = alice.quotas.request("churn", {"storage": "20GB", "runs": 4}, reason="bigger")
    assert {r.id for r in admin.quotas.requests(status="pending")} == {denied.id, approved.id}
    assert {r.id for r in alice.quotas.requests("churn")} == {denied.id, approved.id}
    with pytest.raises(PermissionDenied, match="quota:approve needs a platform admin"):
        alice.quotas.approve(approved.id)
    with pytest.raises(PermissionDenied):
        alice.quotas.requests()
    with pytest.raises(PermissionDenied, match="role 'owner' may not quota:set"):
        alice.quotas.set("churn", {"runs": 50})

    d = admin.quotas.deny(denied.id, note="no")
    assert d.status == "denied" and d.decided_by == "admin" and d.note == "no"
    assert limits() == start
    a = admin.quotas.approve(approved.id)
    assert a.status == "approved"
    assert limits() == {**start, "storage": 20e9, "runs": 4}
    for decided in (denied.id, approved.id):
        with pytest.raises(Conflict, match=f"quota request {decided} is already"):
            admin.quotas.approve(decided)
    with pytest.raises(NotFound, match="quota request 4242 not found"):
        admin.quotas.deny(4242)
    assert [r.status for r in alice.quotas.requests("churn", status="approved")] == ["approved"]
    actions = {(e.action, e.outcome) for e in admin.audit.list("churn")}
    assert {("quota:request", "ok"), ("quota:approve", "ok"), ("quota:deny", "ok")} <= actions


def test_admin_sets_quotas_directly(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    alice.projects.create("churn")
    shown = {i.resource: i for i in admin.quotas.set("churn", {"storage": "20GB", "cpu": 2}).items}
    assert shown["storage"].limit == 20e9 and shown["cpu"].limit == 2
    assert shown["storage"].shown == "0 B / 20 GB"
    with pytest.raises(InvalidInput, match="unknown quota 'gpu'"):
        admin.quotas.set("churn", {"gpu": 1})
