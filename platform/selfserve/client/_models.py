"""Experiments and models in the SDK: runs and their comparison, registered models, promotions, lineage."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from selfserve.client._base import SubClient
from selfserve.errors import InvalidInput
from selfserve.schemas.models import (
    ExperimentPublic,
    ExperimentRun,
    ModelDetail,
    ModelLineage,
    ModelPublic,
    ModelVersionPublic,
    PromotionPublic,
    RunComparison,
)


def sort_key(sort: str | None, desc: bool = False) -> str | None:
    """The API's ``sort``: a metric name, with a leading ``-`` for descending (``desc`` or ``-f1``)."""
    if sort is None:
        if desc:
            raise InvalidInput("descending order needs a metric to sort by")
        return None
    name = sort.removeprefix("-")
    if not name:
        raise InvalidInput(f"invalid sort {sort!r}: give a metric name")
    return f"-{name}" if desc or sort.startswith("-") else name


class ExperimentsClient(SubClient):
    """The project's MLflow experiments and runs (``client.runs`` holds the flow runs)."""

    def list(self, project: str) -> builtins.list[ExperimentPublic]:
        return self._many(ExperimentPublic, self._call("experiments.list", project=project))

    def runs(
        self, project: str, experiment: str, *, sort: str | None = None, desc: bool = False, limit: int = 50
    ) -> builtins.list[ExperimentRun]:
        """An experiment's runs: newest first, or by the metric ``sort`` (``desc`` or ``-f1``: highest first)."""
        params: dict[str, object] = {"limit": limit}
        key = sort_key(sort, desc)
        if key is not None:
            params["sort"] = key
        data = self._call("experiments.runs", project=project, name=experiment, params=params)
        return self._many(ExperimentRun, data)

    def compare(self, project: str, run_ids: Sequence[str]) -> RunComparison:
        """2 to 10 runs of the project side by side."""
        body = {"run_ids": list(run_ids)}
        return self._one(RunComparison, self._call("experiments.compare", project=project, json=body))


class ModelsClient(SubClient):
    """The project's registered models: versions, champion and challenger, promotions and lineage."""

    def list(self, project: str) -> builtins.list[ModelPublic]:
        return self._many(ModelPublic, self._call("models.list", project=project))

    def get(self, project: str, name: str, *, versions: int = 10) -> ModelDetail:
        """A model with its ``versions`` newest versions and its promotion history."""
        data = self._call("models.get", project=project, name=name, params={"versions": versions})
        return self._one(ModelDetail, data)

    def versions(self, project: str, name: str, *, limit: int = 100) -> builtins.list[ModelVersionPublic]:
        data = self._call("models.versions", project=project, name=name, params={"limit": limit})
        return self._many(ModelVersionPublic, data)

    def promote(self, project: str, name: str, version: int, *, reason: str = "") -> PromotionPublic:
        """Make ``version`` the champion; the one it replaces is kept for :meth:`rollback`."""
        body = {"version": version, "reason": reason}
        return self._one(PromotionPublic, self._call("models.promote", project=project, name=name, json=body))

    def rollback(self, project: str, name: str, *, reason: str = "") -> PromotionPublic:
        """Make the champion before the current one champion again."""
        body = {"reason": reason}
        return self._one(PromotionPublic, self._call("models.rollback", project=project, name=name, json=body))

    def lineage(self, project: str, name: str, version: int) -> ModelLineage:
        """Dataset versions -> run -> code -> the version -> deployments."""
        data = self._call("models.lineage", project=project, name=name, version=version)
        return self._one(ModelLineage, data)
