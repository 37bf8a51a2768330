"""Provisioning: each engine plugs a :class:`Provisioner` in to set a project up and tear it down.

Steps are idempotent, retried with backoff, and their state is stored per project, so
``project show`` tells what is ready and ``project provision`` retries what failed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from selfserve.settings import Settings

if TYPE_CHECKING:
    from selfserve.store import Store

log = logging.getLogger(__name__)


class Provisioner(ABC):
    """Sets up and tears down one engine's share of a project. Every method must be idempotent."""

    name: str

    @abstractmethod
    def provision(self, project: str) -> None:
        """Create what the project needs in this engine (again, if it exists)."""

    @abstractmethod
    def deprovision(self, project: str) -> None:
        """Remove the project's share of this engine; a no-op if it is already gone."""

    def on_members_changed(self, project: str, members: dict[str, str]) -> None:  # noqa: B027
        """React to a changed member list (``user -> role``). Default: nothing to do."""

    def on_quotas_changed(self, project: str, limits: dict[str, float]) -> None:  # noqa: B027
        """React to changed quotas. Default: nothing to do."""


def retry(fn: Callable[[], None], *, attempts: int = 3, base_delay: float = 0.2) -> int:
    """Run ``fn`` up to ``attempts`` times with exponential backoff; returns attempts used.

    Raises:
        Exception: the last error, once every attempt failed.
    """
    for i in range(1, attempts + 1):
        try:
            fn()
            return i
        except Exception as e:
            if i == attempts:
                raise
            log.warning("provisioning step failed (attempt %d/%d): %s", i, attempts, e)
            time.sleep(base_delay * 2 ** (i - 1))
    return attempts


_registry: list[Callable[[Settings], Provisioner]] = []


def register(factory: Callable[[Settings], Provisioner]) -> Callable[[Settings], Provisioner]:
    """Add a provisioner factory; engines call this once at import."""
    _registry.append(factory)
    return factory


def build_all(settings: Settings, store: Store | None = None) -> list[Provisioner]:
    """The platform's provisioners. ``store`` is the metadata DB of the caller (default: the settings')."""
    from selfserve.data.storage_provisioner import StorageProvisioner

    built: list[Provisioner] = [StorageProvisioner(settings)]
    if settings.pipelines.enabled:
        from selfserve.pipelines.provisioner import PrefectProvisioner

        built.append(PrefectProvisioner(settings))
    if settings.models.enabled:
        from selfserve.ml.provisioner import MLflowProvisioner

        built.append(MLflowProvisioner(settings, store))
    built += [factory(settings) for factory in _registry]
    return built
