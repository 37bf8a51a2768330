from __future__ import annotations

import pytest

from selfserve.errors import Unauthenticated
from selfserve.runtime.demo import PROJECT, Seeded, demo
from tests.support import Platform


def test_demo_creates_the_demo_project_once(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    assert demo(admin) == [Seeded("project demo", "created")]
    assert demo(admin) == [Seeded("project demo", "exists")]
    project = admin.projects.get(PROJECT)
    assert project.role == "owner" and project.status == "ready"
    assert [p.name for p in admin.projects.list()] == [PROJECT]
    assert str(Seeded("project demo", "exists")) == "project demo: already there"


def test_demo_as_a_user_who_cannot_see_the_project_creates_nothing(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    alice = sqlite_platform.user("alice", admin_client=admin)
    assert demo(alice) == [Seeded("project demo", "exists")]
    assert alice.projects.list() == []


def test_demo_needs_a_login(sqlite_platform: Platform) -> None:
    with pytest.raises(Unauthenticated):
        demo(sqlite_platform.client())
