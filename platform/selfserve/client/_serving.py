"""Serving in the SDK: deployments of model versions, routes over them, predictions and feedback."""

from __future__ import annotations

import builtins
import time
from typing import Any

from selfserve.client._base import SubClient
from selfserve.errors import InvalidInput, ServiceUnavailable
from selfserve.schemas.serving import (
    DeploymentLogs,
    DeploymentPublic,
    FeedbackResult,
    PredictResponse,
    RoutePublic,
    RouteRevisionPublic,
    RouteStats,
)


def spec_of(
    targets: dict[str, int] | str,
    *,
    sticky_key: str | None = None,
    shadow: str | None = None,
    feature_view: str | None = None,
) -> dict[str, Any]:
    """A route spec body: ``targets`` is ``{"clf-v7": 90, "clf-v8": 10}`` or one deployment's name (100%)."""
    weights = {targets: 100} if isinstance(targets, str) else dict(targets)
    return {"targets": weights, "sticky_key": sticky_key, "shadow": shadow, "feature_view": feature_view}


def parse_targets(items: builtins.list[str]) -> dict[str, int]:
    """``["clf-v7=90", "clf-v8=10"]`` (or one bare name, for 100%) -> ``{"clf-v7": 90, "clf-v8": 10}``."""
    if len(items) == 1 and "=" not in items[0]:
        return {items[0]: 100}
    out: dict[str, int] = {}
    for item in items:
        name, sep, weight = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"invalid target {item!r}: use <deployment>=<percent>, e.g. clf-v7=90")
        if name in out:
            raise InvalidInput(f"target {name!r} given twice")
        try:
            out[name] = int(weight)
        except ValueError:
            raise InvalidInput(f"invalid weight in {item!r}: a whole percent from 0 to 100") from None
    return out


class DeploymentsClient(SubClient):
    def list(self, project: str) -> builtins.list[DeploymentPublic]:
        return self._many(DeploymentPublic, self._call("deployments.list", project=project))

    def get(self, project: str, name: str) -> DeploymentPublic:
        return self._one(DeploymentPublic, self._call("deployments.get", project=project, name=name))

    def create(self, project: str, name: str, model: str) -> DeploymentPublic:
        """Serve ``model`` (``clf@champion`` or ``clf@7``) as deployment ``name``; it starts in the background."""
        body = {"name": name, "model": model}
        return self._one(DeploymentPublic, self._call("deployments.create", project=project, json=body))

    def wait_ready(self, project: str, name: str, timeout: float = 180.0, interval: float = 0.5) -> DeploymentPublic:
        """Poll until the deployment is ready.

        Raises:
            ServiceUnavailable: it failed, or was not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            dep = self.get(project, name)
            if dep.state == "ready":
                return dep
            if dep.state == "failed":
                raise ServiceUnavailable(f"deployment {name!r} failed: {dep.last_error or 'see its logs'}")
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"deployment {name!r} is still {dep.state} after {timeout:g} s")
            time.sleep(interval)

    def logs(self, project: str, name: str, tail: int = 200) -> DeploymentLogs:
        data = self._call("deployments.logs", project=project, name=name, params={"tail": tail})
        return self._one(DeploymentLogs, data)

    def delete(self, project: str, name: str) -> None:
        self._call("deployments.delete", project=project, name=name)


class RoutesClient(SubClient):
    def list(self, project: str) -> builtins.list[RoutePublic]:
        return self._many(RoutePublic, self._call("routes.list", project=project))

    def get(self, project: str, name: str) -> RoutePublic:
        return self._one(RoutePublic, self._call("routes.get", project=project, name=name))

    def create(
        self,
        project: str,
        name: str,
        targets: dict[str, int] | str,
        *,
        sticky_key: str | None = None,
        shadow: str | None = None,
        feature_view: str | None = None,
    ) -> RoutePublic:
        body = {"name": name, **spec_of(targets, sticky_key=sticky_key, shadow=shadow, feature_view=feature_view)}
        return self._one(RoutePublic, self._call("routes.create", project=project, json=body))

    def set(
        self,
        project: str,
        name: str,
        targets: dict[str, int] | str,
        *,
        sticky_key: str | None = None,
        shadow: str | None = None,
        feature_view: str | None = None,
    ) -> RoutePublic:
        """Replace the route's whole spec (what is not given is removed)."""
        body = spec_of(targets, sticky_key=sticky_key, shadow=shadow, feature_view=feature_view)
        return self._one(RoutePublic, self._call("routes.set", project=project, name=name, json=body))

    def switch(self, project: str, name: str, to: str, reason: str = "") -> RoutePublic:
        body = {"to": to, "reason": reason}
        return self._one(RoutePublic, self._call("routes.switch", project=project, name=name, json=body))

    def rollback(self, project: str, name: str, reason: str = "") -> RoutePublic:
        body = {"reason": reason}
        return self._one(RoutePublic, self._call("routes.rollback", project=project, name=name, json=body))

    def history(self, project: str, name: str) -> builtins.list[RouteRevisionPublic]:
        return self._many(RouteRevisionPublic, self._call("routes.history", project=project, name=name))

    def stats(self, project: str, name: str, window: int = 900) -> RouteStats:
        data = self._call("routes.stats", project=project, name=name, params={"window": window})
        return self._one(RouteStats, data)

    def delete(self, project: str, name: str) -> None:
        self._call("routes.delete", project=project, name=name)

    def predict(self, project: str, name: str, rows: builtins.list[dict[str, Any]] | dict[str, Any]) -> PredictResponse:
        """Predict with the route: one row (a dict) or many."""
        body = {"rows": [rows] if isinstance(rows, dict) else rows}
        return self._one(PredictResponse, self._call("routes.predict", project=project, name=name, json=body))

    def metrics(self) -> str:
        """The gateway's Prometheus metrics as text (platform admins only)."""
        method, url, headers = self._client._prepare("metrics", True, {})
        resp = self._client._http.request(method, url, headers=headers)
        self._client._raise_for_status(resp)
        return resp.text

    def feedback(self, project: str, name: str, labels: dict[str, Any]) -> FeedbackResult:
        """Labels for earlier predictions: ``{request_id: label}``."""
        body = {"labels": [{"request_id": k, "label": v} for k, v in labels.items()]}
        return self._one(FeedbackResult, self._call("routes.feedback", project=project, name=name, json=body))
