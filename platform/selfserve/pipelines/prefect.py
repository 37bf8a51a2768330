"""The platform's client of the Prefect REST API, holding Prefect's auth string.

Only the platform's own processes (the API, the worker, launchers) use it; users and runs never see
Prefect's URL or credentials. Plain REST over httpx keeps Prefect's client library out of the API
process.
"""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from selfserve.errors import ServiceUnavailable
from selfserve.settings import Settings

# Prefect's state types, in its words; the platform shows them lower-case.
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ACTIVE_STATES = {"PENDING", "RUNNING", "CANCELLING", "PAUSED"}


def pool_name(project: str) -> str:
    """The work pool of a project."""
    return f"ss-{project}"


def launcher_argv(python: str | None = None) -> list[str]:
    """The command every platform run starts with: the launcher, under the platform's Python."""
    return [python or sys.executable, "-m", "selfserve.pipelines.launch"]


def launcher_command(python: str | None = None) -> str:
    return shlex.join(launcher_argv(python))


def parse_time(value: Any) -> datetime | None:
    """A timestamp of Prefect's API (ISO 8601, maybe ending in Z), timezone-aware; None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def base_job_template() -> dict[str, Any]:
    """A process pool's job template whose command is the launcher and cannot be changed per run."""
    nullable_string = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    return {
        "job_configuration": {
            "command": launcher_command(),
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "stream_output": "{{ stream_output }}",
            "working_dir": "{{ working_dir }}",
        },
        "variables": {
            "type": "object",
            "properties": {
                "name": {**nullable_string, "title": "Name"},
                "env": {
                    "type": "object",
                    "title": "Environment Variables",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "labels": {"type": "object", "title": "Labels", "additionalProperties": {"type": "string"}},
                "stream_output": {"type": "boolean", "default": True, "title": "Stream Output"},
                "working_dir": {**nullable_string, "title": "Working Directory"},
            },
        },
    }


class PrefectError(ServiceUnavailable):
    """Prefect answered with an error the platform did not expect."""


class Prefect:
    """A thin synchronous client of the Prefect API."""

    def __init__(self, url: str, auth_string: str, *, timeout: float = 30.0) -> None:
        user, _, password = auth_string.partition(":")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + "/", auth=(user, password), timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Prefect:
        return cls(settings.prefect_url, settings.prefect_auth_string())

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        ok404: bool = False,
        attempts: int = 6,
    ) -> Any:
        """One API call; a busy engine (503: its SQLite was locked) is asked again with backoff (~8 s in all),
        a refused connection or a read timeout once. Every call made here is safe to repeat (run creation
        carries an idempotency key).
        """
        for attempt in range(attempts):
            try:
                r = self._http.request(method, path.lstrip("/"), json=json)
            except httpx.HTTPError as e:
                # An engine that refuses connections is down (a restart takes longer than any backoff
                # here), and a read timeout already waited long: each is asked again once.
                retry = isinstance(e, httpx.ConnectError | httpx.ReadTimeout) and attempt == 0
                if attempt + 1 < attempts and retry:
                    time.sleep(0.25 * 2**attempt)
                    continue
                raise ServiceUnavailable(f"the pipeline engine is not reachable: {type(e).__name__}") from None
            if r.status_code != 503 or attempt + 1 == attempts:
                break
            time.sleep(0.25 * 2**attempt)
        if r.status_code == 404 and ok404:
            return None
        if r.status_code >= 400:
            detail = r.text[:300]
            raise PrefectError(f"pipeline engine refused {method} {path.split('?')[0]}: {r.status_code} {detail}")
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    # -- health ---------------------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            return self._http.get("health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # -- work pools -----------------------------------------------------------------------------

    def ensure_pool(self, name: str, concurrency_limit: int | None) -> None:
        body = {"base_job_template": base_job_template(), "concurrency_limit": concurrency_limit}
        existing = self.request("GET", f"work_pools/{name}", ok404=True)
        if existing is not None and all(existing.get(k) == v for k, v in body.items()):
            return
        if existing is None:
            try:
                self.request("POST", "work_pools/", json={"name": name, "type": "process", **body})
                return
            except PrefectError as e:
                if "409" not in str(e):
                    raise
        self.request("PATCH", f"work_pools/{name}", json=body)

    def set_pool_limit(self, name: str, concurrency_limit: int | None) -> None:
        self.request("PATCH", f"work_pools/{name}", json={"concurrency_limit": concurrency_limit})

    def read_pool(self, name: str) -> dict[str, Any] | None:
        return self.request("GET", f"work_pools/{name}", ok404=True)  # type: ignore[no-any-return]

    def delete_pool(self, name: str) -> None:
        self.request("DELETE", f"work_pools/{name}", ok404=True)

    # -- flows and deployments ------------------------------------------------------------------

    def ensure_flow(self, name: str) -> str:
        return str(self.request("POST", "flows/", json={"name": name})["id"])

    def upsert_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create or replace (by flow and name) a deployment."""
        return self.request("POST", "deployments/", json=body)  # type: ignore[no-any-return]

    def read_deployment(self, deployment_id: str) -> dict[str, Any] | None:
        return self.request("GET", f"deployments/{deployment_id}", ok404=True)  # type: ignore[no-any-return]

    def set_paused(self, deployment_id: str, paused: bool) -> None:
        """Pause or resume a deployment.

        Pausing also deletes the runs its schedule made that have not started: Prefect deletes only
        those due in the future, so a backlog already due (waiting for a run slot) would still run.
        Runs started by hand stay.
        """
        self.request("PATCH", f"deployments/{deployment_id}", json={"paused": paused})
        if not paused:
            return
        while True:
            due = self.flow_runs(deployment_ids=[deployment_id], states=["SCHEDULED"], limit=200)
            made = [fr for fr in due if fr.get("auto_scheduled")]
            for fr in made:
                self.delete_flow_run(str(fr["id"]))
            if len(due) < 200 or not made:
                return

    def delete_deployment(self, deployment_id: str) -> None:
        self.request("DELETE", f"deployments/{deployment_id}", ok404=True)

    def schedules(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"deployments/{deployment_id}/schedules") or []  # type: ignore[no-any-return]

    # -- flow runs --------------------------------------------------------------------------------

    def create_flow_run(
        self, deployment_id: str, parameters: dict[str, Any], *, retries: int | None = None, tags: list[str]
    ) -> dict[str, Any]:
        # The idempotency key makes a repeated request return the run the first one created, so a
        # request that timed out on a busy engine can be asked again without starting the run twice.
        body: dict[str, Any] = {"parameters": parameters, "tags": tags, "idempotency_key": uuid.uuid4().hex}
        if retries is not None:
            body["empirical_policy"] = {"retries": retries, "retry_delay": 5}
        return self.request("POST", f"deployments/{deployment_id}/create_flow_run", json=body)  # type: ignore[no-any-return]

    def read_flow_run(self, flow_run_id: str) -> dict[str, Any] | None:
        return self.request("GET", f"flow_runs/{flow_run_id}", ok404=True)  # type: ignore[no-any-return]

    def update_flow_run(self, flow_run_id: str, body: dict[str, Any]) -> None:
        self.request("PATCH", f"flow_runs/{flow_run_id}", json=body)

    def flow_runs(
        self,
        *,
        deployment_ids: list[str],
        states: list[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        if not deployment_ids:
            return []
        flt: dict[str, Any] = {"deployment_id": {"any_": deployment_ids}}
        if states:
            flt["state"] = {"type": {"any_": states}}
        body = {"flow_runs": flt, "sort": "START_TIME_DESC", "limit": limit, "offset": offset}
        runs = self.request("POST", "flow_runs/filter", json=body) or []
        return sorted(runs, key=lambda r: r.get("expected_start_time") or r["created"], reverse=True)

    def due_pools(self, within: float) -> set[str]:
        """The work pools that have a scheduled run due within ``within`` seconds (one request for all)."""
        before = datetime.now(UTC) + timedelta(seconds=within)
        body = {
            "flow_runs": {
                "state": {"type": {"any_": ["SCHEDULED"]}},
                "next_scheduled_start_time": {"before_": before.isoformat()},
            },
            "sort": "NEXT_SCHEDULED_START_TIME_ASC",
            "limit": 200,
        }
        pools: set[str] = set()
        # Runs held back by a full pool stay due; reading on past them keeps other pools from starving.
        for offset in range(0, 2000, 200):
            runs = self.request("POST", "flow_runs/filter", json={**body, "offset": offset}) or []
            pools |= {r["work_pool_name"] for r in runs if r.get("work_pool_name")}
            if len(runs) < 200:
                break
        return pools

    def count_flow_runs(self, *, deployment_ids: list[str], states: list[str]) -> int:
        if not deployment_ids:
            return 0
        body = {"flow_runs": {"deployment_id": {"any_": deployment_ids}, "state": {"type": {"any_": states}}}}
        return int(self.request("POST", "flow_runs/count", json=body))

    def set_state(
        self, flow_run_id: str, state_type: str, message: str, *, name: str | None = None, force: bool = True
    ) -> dict[str, Any]:
        state: dict[str, Any] = {"type": state_type, "message": message}
        if name:
            state["name"] = name
        return self.request(  # type: ignore[no-any-return]
            "POST", f"flow_runs/{flow_run_id}/set_state", json={"state": state, "force": force}
        )

    def delete_flow_run(self, flow_run_id: str) -> None:
        self.request("DELETE", f"flow_runs/{flow_run_id}", ok404=True)

    def logs(self, flow_run_id: str, *, after: datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"flow_run_id": {"any_": [flow_run_id]}}
        if after is not None:
            flt["timestamp"] = {"after_": after.isoformat()}
        body = {"logs": flt, "sort": "TIMESTAMP_ASC", "limit": min(limit, 200)}
        return self.request("POST", "logs/filter", json=body) or []  # type: ignore[no-any-return]

    def task_runs(self, flow_run_id: str, limit: int = 200) -> list[dict[str, Any]]:
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": limit}
        return self.request("POST", "task_runs/filter", json=body) or []  # type: ignore[no-any-return]
