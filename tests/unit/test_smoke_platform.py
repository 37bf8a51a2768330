from __future__ import annotations

import pytest

from selfserve.errors import NotFound, PermissionDenied
from tests.support import Platform


def test_project_lifecycle_through_the_sdk(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    bob = platform.user("bob", admin_client=admin)
    p = alice.projects.create("churn", description="churn models")
    assert p.role == "owner" and p.status == "ready"
    assert [s.status for s in p.provisioning] == ["ready"]
    alice.members.add("churn", "bob", "viewer")
    assert {m.user: m.role for m in bob.members.list("churn")}["bob"] == "viewer"
    with pytest.raises(PermissionDenied):
        bob.members.add("churn", "admin", "viewer")
    with pytest.raises(NotFound):
        bob.projects.get("nope")
    alice.projects.delete("churn")
    with pytest.raises(NotFound):
        alice.projects.get("churn")
