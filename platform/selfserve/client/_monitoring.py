"""Monitoring in the SDK: monitors over routes, their runs and reports, alerts."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from selfserve.client._base import SubClient
from selfserve.schemas.monitoring import AlertPublic, MonitorPublic, MonitorRunPublic


class MonitorsClient(SubClient):
    def list(self, project: str) -> builtins.list[MonitorPublic]:
        return self._many(MonitorPublic, self._call("monitors.list", project=project))

    def get(self, project: str, route: str) -> MonitorPublic:
        return self._one(MonitorPublic, self._call("monitors.get", project=project, name=route))

    def create(
        self,
        project: str,
        route: str,
        *,
        reference: str | None = None,
        label: str | None = None,
        window_seconds: int = 3600,
        schedule: str | None = None,
        drift_share: float = 0.3,
        on_drift: str = "alert",
        policy: str = "auto",
        webhook_url: str | None = None,
    ) -> MonitorPublic:
        """Watch ``route``. ``reference`` is ``DATASET`` or ``DATASET@VERSION`` (default: the data the route's
        model was trained on); ``schedule`` a cron expression (default: on demand only)."""
        body = {
            "route": route,
            "reference": reference,
            "label": label,
            "window_seconds": window_seconds,
            "schedule": schedule,
            "drift_share": drift_share,
            "on_drift": on_drift,
            "policy": policy,
            "webhook_url": webhook_url,
        }
        return self._one(MonitorPublic, self._call("monitors.create", project=project, json=body))

    def delete(self, project: str, route: str) -> None:
        self._call("monitors.delete", project=project, name=route)

    def run(self, project: str, route: str) -> str:
        """Start a run now; the id of its flow run (follow it with ``client.runs.get``)."""
        return str(self._call("monitors.run", project=project, name=route)["flow_run_id"])

    def runs(self, project: str, route: str, limit: int = 50) -> builtins.list[MonitorRunPublic]:
        data = self._call("monitors.runs", project=project, name=route, params={"limit": limit})
        return self._many(MonitorRunPublic, data)

    def record(self, project: str, route: str, summary: dict[str, Any], html: bytes | None = None) -> MonitorRunPublic:
        """Send what a run found (the monitor flow does this)."""
        body = {**summary, "html": html.decode() if html else None}
        return self._one(MonitorRunPublic, self._call("monitors.record", project=project, name=route, json=body))

    def report(self, project: str, route: str, dest: str | Path, *, run: int | None = None) -> Path:
        """Save a run's HTML report (default the newest) to ``dest``."""
        out = Path(dest)
        params = {"run": run} if run is not None else None
        self._client._download("monitors.report", out, project=project, name=route, params=params)
        return out


class AlertsClient(SubClient):
    def list(
        self, project: str, *, route: str | None = None, open_only: bool = False, limit: int = 100
    ) -> builtins.list[AlertPublic]:
        params: dict[str, Any] = {"limit": limit, "open": open_only}
        if route:
            params["route"] = route
        return self._many(AlertPublic, self._call("alerts.list", project=project, params=params))

    def ack(self, project: str, alert_id: int) -> AlertPublic:
        return self._one(AlertPublic, self._call("alerts.ack", project=project, alert_id=alert_id))
