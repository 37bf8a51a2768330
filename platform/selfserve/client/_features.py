"""Feature views in the SDK: datasets served by key from the online store."""

from __future__ import annotations

import builtins

from selfserve.client._base import SubClient
from selfserve.schemas.serving import FeatureRow, FeatureViewPublic


class FeaturesClient(SubClient):
    """The project's feature views: create one on a dataset and its key column, then read rows by key."""

    def list(self, project: str) -> builtins.list[FeatureViewPublic]:
        return self._many(FeatureViewPublic, self._call("features.list", project=project))

    def create(self, project: str, name: str, *, dataset: str, key: str) -> FeatureViewPublic:
        """Create a view and materialize the dataset's newest version; later versions follow by themselves.

        A view whose data cannot be served (duplicate or null keys) is still created, in state
        ``failed`` with the reason in ``last_error``.
        """
        body = {"name": name, "dataset": dataset, "key": key}
        return self._one(FeatureViewPublic, self._call("features.create", project=project, json=body))

    def get(self, project: str, name: str) -> FeatureViewPublic:
        return self._one(FeatureViewPublic, self._call("features.get", project=project, name=name))

    def materialize(self, project: str, name: str) -> FeatureViewPublic:
        """Materialize the dataset's newest version now; data that cannot be served raises InvalidInput."""
        return self._one(FeatureViewPublic, self._call("features.materialize", project=project, name=name))

    def delete(self, project: str, name: str) -> None:
        self._call("features.delete", project=project, name=name)

    def lookup(self, project: str, name: str, key: str | int) -> FeatureRow:
        """The values of one key (``42`` or ``"42"`` alike for an integer key) and their dataset version."""
        return self._one(FeatureRow, self._call("features.lookup", project=project, name=name, key=key))
