"""Pipelines in the SDK: deploy flows (built-in or your own code), run them, follow their runs."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from selfserve.client._base import SubClient
from selfserve.errors import InvalidInput
from selfserve.schemas.pipelines import FlowDeploymentPublic, LogLine, RunLogs, RunPublic

FINAL = {"completed", "failed", "crashed", "cancelled"}


def schedule_of(
    cron: str | None = None, interval: str | float | None = None, timezone: str = "UTC"
) -> dict[str, Any] | None:
    """A schedule body from ``cron`` or ``interval`` (seconds, or a duration like ``1h``)."""
    if cron is not None and interval is not None:
        raise InvalidInput("give either a cron expression or an interval, not both")
    if cron is not None:
        return {"cron": cron, "timezone": timezone}
    if interval is not None:
        from selfserve.settings import parse_duration

        try:
            seconds = parse_duration(interval)
        except ValueError as e:
            raise InvalidInput(f"invalid interval: {e}") from None
        return {"interval_seconds": seconds, "timezone": timezone}
    return None


def _duration(value: str | float | None, what: str) -> float | None:
    if value is None:
        return None
    from selfserve.settings import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise InvalidInput(f"invalid {what}: {e}") from None


class FlowsClient(SubClient):
    def list(self, project: str) -> builtins.list[FlowDeploymentPublic]:
        return self._many(FlowDeploymentPublic, self._call("flows.list", project=project))

    def get(self, project: str, name: str) -> FlowDeploymentPublic:
        return self._one(FlowDeploymentPublic, self._call("flows.get", project=project, name=name))

    def deploy(
        self,
        project: str,
        path: str | Path,
        function: str,
        *,
        name: str,
        source: str | Path | None = None,
        cron: str | None = None,
        interval: str | float | None = None,
        parameters: dict[str, Any] | None = None,
        retries: int = 0,
        timeout: str | float | None = None,
        requirements: str | Path | None = None,
        description: str = "",
    ) -> FlowDeploymentPublic:
        """Deploy the flow ``function`` of the file ``path``.

        The file (or, with ``source``, the whole directory holding it) is zipped and copied into
        platform storage; the platform imports it in a confined process to check it defines the
        flow. ``requirements`` names a requirements file for an isolated environment.
        """
        from selfserve.pipelines.code import pack

        file = Path(path)
        if not file.is_file():
            raise InvalidInput(f"{file} is not a file")
        root = Path(source) if source is not None else None
        if root is not None:
            try:
                rel = file.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                raise InvalidInput(f"{file} is not inside {root}") from None
            archive = pack(root, max_bytes=200 * 2**20)
        else:
            rel = file.name
            archive = pack(file, max_bytes=200 * 2**20)
        spec = {
            "name": name,
            "entrypoint": f"{rel}:{function}",
            "parameters": parameters or {},
            "schedule": schedule_of(cron, interval),
            "retries": retries,
            "timeout_seconds": _duration(timeout, "timeout"),
            "description": description,
        }
        files: dict[str, Any] = {"code": ("code.zip", archive, "application/zip")}
        if requirements is not None:
            files["requirements"] = ("requirements.txt", Path(requirements).read_bytes(), "text/plain")
        data = self._client._request("flows.deploy_code", project=project, data={"spec": json.dumps(spec)}, files=files)
        return self._one(FlowDeploymentPublic, data)

    def deploy_builtin(
        self,
        project: str,
        flow: str,
        name: str,
        parameters: dict[str, Any],
        *,
        cron: str | None = None,
        interval: str | float | None = None,
        retries: int = 0,
        timeout: str | float | None = None,
        description: str = "",
    ) -> FlowDeploymentPublic:
        """Deploy a built-in flow (``ingest``, ``transform`` or ``train``); ``parameters`` is its request body."""
        body = {
            "flow": flow,
            "name": name,
            "parameters": parameters,
            "schedule": schedule_of(cron, interval),
            "retries": retries,
            "timeout_seconds": _duration(timeout, "timeout"),
            "description": description,
        }
        return self._one(FlowDeploymentPublic, self._call("flows.deploy_builtin", project=project, json=body))

    def pause(self, project: str, name: str) -> FlowDeploymentPublic:
        return self._one(FlowDeploymentPublic, self._call("flows.pause", project=project, name=name))

    def resume(self, project: str, name: str) -> FlowDeploymentPublic:
        return self._one(FlowDeploymentPublic, self._call("flows.resume", project=project, name=name))

    def delete(self, project: str, name: str) -> None:
        self._call("flows.delete", project=project, name=name)

    def run(self, project: str, name: str, *, parameters: dict[str, Any] | None = None) -> RunPublic:
        """Start a run now; returns at once (see :meth:`RunsClient.wait`)."""
        body = {"parameters": parameters or {}}
        return self._one(RunPublic, self._call("flows.run", project=project, name=name, json=body))


class RunsClient(SubClient):
    def list(
        self, project: str, *, state: str | None = None, flow: str | None = None, limit: int = 50
    ) -> builtins.list[RunPublic]:
        params = {k: v for k, v in {"state": state, "flow": flow, "limit": limit}.items() if v is not None}
        return self._many(RunPublic, self._call("runs.list", project=project, params=params))

    def get(self, project: str, run_id: str) -> RunPublic:
        return self._one(RunPublic, self._call("runs.get", project=project, run_id=run_id))

    def logs(self, project: str, run_id: str, *, after: datetime | None = None, limit: int = 200) -> RunLogs:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after.isoformat()
        return self._one(RunLogs, self._call("runs.logs", project=project, run_id=run_id, params=params))

    def follow(self, project: str, run_id: str, *, poll: float = 1.0, linger: float = 3.0) -> Iterator[LogLine]:
        """Yield log lines as they come, until the run has ended and ``linger`` s brought no more
        (a run's last lines reach the engine shortly after its final state)."""
        after: datetime | None = None
        ended_at: float | None = None
        while True:
            page = self.logs(project, run_id, after=after)
            yield from page.lines
            after = page.next_after
            if page.run.state in FINAL:
                ended_at = ended_at or time.monotonic()
                if not page.lines and time.monotonic() - ended_at >= linger:
                    return
            if not page.lines:
                time.sleep(poll)

    def cancel(self, project: str, run_id: str) -> RunPublic:
        return self._one(RunPublic, self._call("runs.cancel", project=project, run_id=run_id))

    def wait(
        self,
        project: str,
        run_id: str,
        *,
        timeout: float = 3600,
        poll: float = 0.5,
        on_change: Callable[[RunPublic], None] | None = None,
    ) -> RunPublic:
        """Wait until the run ends; returns its last state (it does not raise for a failed run)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            run = self.get(project, run_id)
            if on_change and run.state != last:
                on_change(run)
            last = run.state
            if run.state in FINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not end within {timeout:g} s (it is {run.state})")
            time.sleep(poll)
