from __future__ import annotations

from selfserve.data.objectstore import from_settings, project_prefix
from selfserve.policy.provisioning import Provisioner
from selfserve.settings import Settings


class StorageProvisioner(Provisioner):
    """The project's storage prefix ``projects/<p>/``."""

    name = "storage"

    def __init__(self, settings: Settings) -> None:
        self.store = from_settings(settings)

    def provision(self, project: str) -> None:
        self.store.ensure_prefix(project_prefix(project))

    def deprovision(self, project: str) -> None:
        self.store.delete_prefix(project_prefix(project))
