"""The project's share of Prefect: a process work pool whose concurrency limit is the ``runs`` quota."""

from __future__ import annotations

import logging

from selfserve.pipelines.prefect import Prefect, pool_name
from selfserve.policy import quotas
from selfserve.policy.provisioning import Provisioner
from selfserve.settings import Settings

log = logging.getLogger(__name__)


class PrefectProvisioner(Provisioner):
    name = "pipelines"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._prefect: Prefect | None = None

    @property
    def prefect(self) -> Prefect:
        if self._prefect is None:
            self._prefect = Prefect.from_settings(self.settings)
        return self._prefect

    def provision(self, project: str) -> None:
        pool = pool_name(project)
        existing = self.prefect.read_pool(pool)
        # A new pool starts at the default quota; an existing one keeps the limit the quota set.
        limit = existing.get("concurrency_limit") if existing else int(quotas.defaults()["runs"])
        self.prefect.ensure_pool(pool, limit)

    def deprovision(self, project: str) -> None:
        pool = pool_name(project)
        body = {"work_pools": {"name": {"any_": [pool]}}, "limit": 200}
        for dep in self.prefect.request("POST", "deployments/filter", json=body) or []:
            self.prefect.delete_deployment(str(dep["id"]))
        runs = {
            "work_pools": {"name": {"any_": [pool]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"]}}},
            "limit": 200,
        }
        for fr in self.prefect.request("POST", "flow_runs/filter", json=runs) or []:
            self.prefect.set_state(str(fr["id"]), "CANCELLING", "the project was deleted")
        self.prefect.delete_pool(pool)

    def on_quotas_changed(self, project: str, limits: dict[str, float]) -> None:
        self.prefect.set_pool_limit(pool_name(project), max(int(limits["runs"]), 0))
