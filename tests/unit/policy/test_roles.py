"""Roles come from the settings (``config/selfserve.toml``): a role an admin adds there is honoured at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from selfserve.errors import InvalidInput, NotFound, PermissionDenied
from selfserve.policy import roles
from selfserve.policy.authz import Caller, authorize
from selfserve.settings import DEFAULT_CONFIG_FILE, get_settings
from selfserve.store.tables import Principal
from tests.support import Platform

AUDITOR = """

[roles.auditor]
description = "Reads the project and its audit trail, nothing else."
actions = ["project:read", "audit:read"]
"""


@pytest.fixture
def with_auditor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped config with one more role, in effect through SELFSERVE_CONFIG_FILE."""
    config = tmp_path / "selfserve.toml"
    config.write_text(DEFAULT_CONFIG_FILE.read_text() + AUDITOR)
    monkeypatch.setenv("SELFSERVE_CONFIG_FILE", str(config))
    get_settings.cache_clear()
    return config


def test_shipped_roles() -> None:
    assert {"owner", "engineer", "scientist", "viewer", "service"} <= set(roles.all_roles())
    assert "member:write" in roles.actions_of("owner")
    assert "member:write" not in roles.actions_of("viewer")
    assert roles.actions_of("no-such-role") == frozenset()
    with pytest.raises(InvalidInput, match="unknown role 'boss'; roles are: "):
        roles.check_role("boss")


def test_a_role_added_in_the_config_is_honoured(sqlite_platform: Platform, with_auditor: Path) -> None:
    admin = sqlite_platform.admin()
    alice = sqlite_platform.user("alice", admin_client=admin)
    bob = sqlite_platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    assert "auditor" in {r.name for r in bob.roles()}
    alice.members.add("churn", "bob", "auditor")

    assert bob.projects.get("churn").role == "auditor"
    assert bob.audit.list("churn")
    with pytest.raises(PermissionDenied, match="role 'auditor' may not member:read in project 'churn'"):
        bob.members.list("churn")
    with pytest.raises(PermissionDenied, match="role 'auditor' may not quota:read"):
        bob.quotas.get("churn")
    with pytest.raises(PermissionDenied):
        bob.projects.update("churn", description="no")


def test_authorize_reads_the_roles_at_decision_time(
    sqlite_platform: Platform, with_auditor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = sqlite_platform.admin()
    alice = sqlite_platform.user("alice", admin_client=admin)
    sqlite_platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    alice.members.add("churn", "bob", "auditor")
    with sqlite_platform.store.session() as s:
        bob = s.scalar(select(Principal).where(Principal.name == "bob"))
        assert bob is not None
        caller = Caller(id=bob.id, name="bob", kind="user", is_admin=False, token_id=0)
        _, role = authorize(s, caller, "audit:read", "churn")
        assert role == "auditor"
        # The role is taken out of the config: its members keep their membership and lose its actions.
        monkeypatch.setenv("SELFSERVE_CONFIG_FILE", str(DEFAULT_CONFIG_FILE))
        get_settings.cache_clear()
        with pytest.raises(PermissionDenied, match="role 'auditor' may not audit:read"):
            authorize(s, caller, "audit:read", "churn")
        with pytest.raises(NotFound, match="project 'elsewhere' not found"):
            authorize(s, caller, "audit:read", "elsewhere")


def test_the_service_role_cannot_be_given_to_people(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    sqlite_platform.user("bob", admin_client=admin)
    admin.projects.create("churn")
    with pytest.raises(InvalidInput, match="reserved for the project's service account"):
        admin.members.add("churn", "bob", "service")
