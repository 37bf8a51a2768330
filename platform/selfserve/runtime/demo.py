"""The demo content ``selfserve up`` seeds (``--no-demo`` skips it; ``selfserve demo`` reruns it).

Every step goes through the SDK and is idempotent: it creates what is missing and leaves what
exists alone, so seeding twice changes nothing. Later parts of the platform add their steps to
:data:`STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from selfserve.errors import Conflict, NotFound

if TYPE_CHECKING:
    from selfserve.client import Client

PROJECT = "demo"
PROJECT_DESCRIPTION = "Demo project created by `selfserve up`"


@dataclass(frozen=True)
class Seeded:
    """One piece of demo content and what seeding did to it."""

    what: str
    outcome: Literal["created", "exists"]

    def __str__(self) -> str:
        return f"{self.what}: {'created' if self.outcome == 'created' else 'already there'}"


def project(client: Client) -> Seeded:
    """The ``demo`` project, owned by the seeding user."""
    what = f"project {PROJECT}"
    try:
        client.projects.get(PROJECT)
        return Seeded(what, "exists")
    except NotFound:
        pass
    try:
        client.projects.create(PROJECT, description=PROJECT_DESCRIPTION)
    except Conflict:
        # Created meanwhile, or owned by someone this user cannot see: either way it exists.
        return Seeded(what, "exists")
    return Seeded(what, "created")


STEPS: list[Callable[[Client], Seeded]] = [project]


def demo(client: Client) -> list[Seeded]:
    """Seed the demo content as the client's user; safe to run any number of times.

    Raises:
        SelfServeError: a step failed (e.g. ``Unauthenticated`` without a valid login); the steps
            before it stay done.
    """
    return [step(client) for step in STEPS]
