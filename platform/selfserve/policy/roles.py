"""Project roles: each a named set of actions, read from settings so an admin can add roles."""

from __future__ import annotations

from selfserve.errors import InvalidInput
from selfserve.settings import RoleSettings, get_settings

OWNER = "owner"


def all_roles() -> dict[str, RoleSettings]:
    return get_settings().roles


def actions_of(role: str) -> frozenset[str]:
    spec = all_roles().get(role)
    return frozenset(spec.actions) if spec else frozenset()


def check_role(role: str) -> str:
    roles = all_roles()
    if role not in roles:
        raise InvalidInput(f"unknown role {role!r}; roles are: {', '.join(sorted(roles))}")
    return role


def all_actions() -> frozenset[str]:
    return frozenset(a for spec in all_roles().values() for a in spec.actions)
