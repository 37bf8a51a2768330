"""The gateway: ``POST /projects/<p>/routes/<r>/predict`` -> one deployment of the route, and its log.

On the request path: the caller's right to ``route:invoke`` (decided by ``authorize()``, remembered
for ``AUTHZ_TTL`` seconds per token and project), the project's requests-per-minute quota, the
route's spec and its deployments (read from the DB at most once per ``ROUTE_TTL`` seconds, and at
once after a change made through this process), the feature view's values for rows that carry only
a key, a check of every row against the chosen model's inputs, then one call through a pooled HTTP
client. A shadow gets a copy in a background task; its answer is logged, never returned or waited
for. The log is buffered (:mod:`selfserve.serving.predlog`) and written off the request path.

Target choice: with a sticky key, a deterministic hash of ``<route>:<value of the key in the first
row>`` picks a bucket of 10 000 and the targets own consecutive ranges by weight, so a key keeps its
target as long as the weights do; without one, a uniform random draw over the same ranges.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import select

from selfserve.errors import InvalidInput, NotFound, RateLimited, ServiceUnavailable
from selfserve.policy import quotas
from selfserve.policy.authz import Caller, authorize
from selfserve.runtime._services import local_address
from selfserve.schemas.serving import RouteSpec, TargetStats
from selfserve.serving.predlog import PredictionLog
from selfserve.settings import Settings
from selfserve.store import Store
from selfserve.store.tables import Project, ServingDeployment, ServingRoute

log = logging.getLogger("selfserve.gateway")
ROUTE_TTL = 1.0
AUTHZ_TTL = 2.0
BUCKETS = 10_000
STATS_MINUTES = 60
SAMPLES_PER_MINUTE = 2000
NUMBER_TYPES = {"double", "float", "long", "integer"}
INTEGER_TYPES = {"long", "integer"}


@dataclass(frozen=True)
class Target:
    name: str
    model: str
    version: int
    state: str
    url: str | None
    inputs: tuple[tuple[str, str], ...]


@dataclass
class ResolvedRoute:
    project_id: int
    project: str
    name: str
    spec: RouteSpec
    targets: dict[str, Target]
    rpm: float
    expires: float
    # Cumulative weight ranges over BUCKETS: [(upper bound, target name)].
    ranges: list[tuple[int, str]] = field(default_factory=list)

    def pick(self, sticky_value: Any = None) -> str:
        if sticky_value is not None:
            digest = hashlib.blake2b(f"{self.name}:{sticky_value}".encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest, "big") % BUCKETS
        else:
            bucket = random.randrange(BUCKETS)
        for upper, name in self.ranges:
            if bucket < upper:
                return name
        return self.ranges[-1][1]


def ranges_of(targets: dict[str, int]) -> list[tuple[int, str]]:
    """Targets in name order own consecutive ranges of the buckets in proportion to their weights;
    targets of weight 0 own none."""
    out: list[tuple[int, str]] = []
    upper = 0
    for name in sorted(targets):
        if targets[name] <= 0:
            continue
        upper += targets[name] * BUCKETS // 100
        out.append((upper, name))
    return out


class RateLimiter:
    """Requests per minute per project: a sliding window estimated from this minute's and the last
    minute's counts (O(1) per request, exact at minute boundaries)."""

    def __init__(self) -> None:
        self._windows: dict[int, list[float]] = {}  # project id -> [minute, count this minute, count last minute]

    def allow(self, project_id: int, limit: float, now: float | None = None) -> tuple[bool, float]:
        now = time.time() if now is None else now
        minute = math.floor(now / 60)
        w = self._windows.get(project_id)
        if w is None or w[0] < minute - 1:
            w = [minute, 0.0, 0.0]
        elif w[0] == minute - 1:
            w = [minute, 0.0, w[1]]
        self._windows[project_id] = w
        elapsed = now / 60 - minute
        estimate = w[1] + w[2] * (1 - elapsed)
        if estimate + 1 > limit:
            return False, 60 * (1 - elapsed)
        w[1] += 1
        return True, 0.0


class _Minute:
    __slots__ = ("errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []


class Stats:
    """Per route and target: requests, errors and latency samples per minute, for the last hour."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, str], dict[tuple[str, bool], deque[tuple[int, _Minute]]]] = {}

    def add(self, project_id: int, route: str, target: str, shadow: bool, latency_ms: float, ok: bool) -> None:
        minute = int(time.time() // 60)
        series = self._data.setdefault((project_id, route), {}).setdefault(
            (target, shadow), deque(maxlen=STATS_MINUTES)
        )
        if not series or series[-1][0] != minute:
            series.append((minute, _Minute()))
        m = series[-1][1]
        m.requests += 1
        if not ok:
            m.errors += 1
        if len(m.latencies) < SAMPLES_PER_MINUTE:
            m.latencies.append(latency_ms)
        else:  # a uniform sample of the minute's latencies
            i = random.randrange(m.requests)
            if i < SAMPLES_PER_MINUTE:
                m.latencies[i] = latency_ms

    def view(self, project_id: int, route: str, window_seconds: int) -> tuple[list[TargetStats], list[dict[str, Any]]]:
        since = int(time.time() // 60) - max(1, window_seconds // 60) + 1
        totals: list[TargetStats] = []
        timeline: list[dict[str, Any]] = []
        for (target, shadow), series in sorted(self._data.get((project_id, route), {}).items()):
            minutes = [(t, m) for t, m in series if t >= since]
            lat = sorted(x for _, m in minutes for x in m.latencies)
            totals.append(
                TargetStats(
                    target=target,
                    shadow=shadow,
                    requests=sum(m.requests for _, m in minutes),
                    errors=sum(m.errors for _, m in minutes),
                    p50_ms=_pct(lat, 50),
                    p95_ms=_pct(lat, 95),
                    p99_ms=_pct(lat, 99),
                )
            )
            for t, m in minutes:
                ms = sorted(m.latencies)
                timeline.append(
                    {
                        "minute": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(t * 60)),
                        "target": target + (" (shadow)" if shadow else ""),
                        "requests": m.requests,
                        "errors": m.errors,
                        "p50_ms": _pct(ms, 50),
                        "p95_ms": _pct(ms, 95),
                    }
                )
        return totals, timeline


def _pct(sorted_values: Sequence[float], p: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return round(sorted_values[i], 3)


class Metrics:
    """Prometheus metrics of the gateway, in a registry of their own (served on ``/api/v1/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("project", "route", "target", "shadow")
        self.requests = Counter(
            "selfserve_route_requests", "Predict requests by route and target.", labels, registry=self.registry
        )
        self.errors = Counter(
            "selfserve_route_errors",
            "Predict requests that failed, by route and target.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "selfserve_route_latency_seconds",
            "Time to answer a predict request, by route and target.",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.rejected = Counter(
            "selfserve_route_rejected",
            "Predict requests refused before reaching a deployment, by reason.",
            ("project", "route", "reason"),
            registry=self.registry,
        )


class Gateway:
    def __init__(self, settings: Settings, store: Store, predlog: PredictionLog, features: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.predlog = predlog
        self.features = features
        self.stats = Stats()
        self.metrics = Metrics()
        self.limiter = RateLimiter()
        self._routes: dict[tuple[str, str], ResolvedRoute] = {}
        self._authz: dict[tuple[int, int | None, str], tuple[float, int]] = {}
        self._shadows: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        host = settings.serving.deployment_url_host or local_address(settings.serving.deployment_host)
        self._host = f"[{host}]" if ":" in host and not host.startswith("[") else host

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.serving.predict_timeout,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._http

    async def close(self) -> None:
        if self._shadows:
            await asyncio.wait(list(self._shadows), timeout=5)
        if self._http is not None:
            await self._http.aclose()

    def forget(self, project: str, route: str | None = None) -> None:
        """Drop cached routes of ``project`` (one, or all) after a change made through this process."""
        for key in [k for k in self._routes if k[0] == project and (route is None or k[1] == route)]:
            self._routes.pop(key, None)

    # -- the cached reads ------------------------------------------------------------------------

    async def _db(self, fn: Any, *args: Any) -> Any:
        """A read that may go to the metadata DB: inline on the embedded SQLite (a local read of well
        under a millisecond, and mostly a cache hit), in a worker thread on a networked DB so that the
        event loop never waits on the network."""
        if self.store.is_local:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def _cached_authz(self, caller: Caller, project: str) -> int | None:
        hit = self._authz.get((caller.token_id, caller.token_project_id, project))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _cached_route(self, project_id: int, project: str, route: str) -> ResolvedRoute | None:
        hit = self._routes.get((project, route))
        if hit is not None and hit.expires > time.monotonic() and hit.project_id == project_id:
            return hit
        return None

    def _authorized(self, caller: Caller, project: str) -> int:
        """``authorize(caller, "route:invoke", project)``; the project's id, remembered for AUTHZ_TTL seconds."""
        key = (caller.token_id, caller.token_project_id, project)
        now = time.monotonic()
        with self.store.session() as session:
            proj, _ = authorize(session, caller, "route:invoke", project)
            project_id = proj.id
        if len(self._authz) > 10_000:
            self._authz.clear()
        self._authz[key] = (now + AUTHZ_TTL, project_id)
        return project_id

    def _resolve(self, project_id: int, project: str, route: str) -> ResolvedRoute:
        """The route's spec, its deployments and the project's rpm quota, read now and kept ROUTE_TTL seconds."""
        key = (project, route)
        now = time.monotonic()
        with self.store.session() as session:
            row = session.scalar(
                select(ServingRoute).where(ServingRoute.project_id == project_id, ServingRoute.name == route)
            )
            if row is None:
                raise NotFound(f"route {route!r} not found in project {project!r}")
            spec = RouteSpec.model_validate(row.spec)
            names = [*spec.targets, *([spec.shadow] if spec.shadow else [])]
            deps = session.scalars(
                select(ServingDeployment).where(
                    ServingDeployment.project_id == project_id, ServingDeployment.name.in_(names)
                )
            )
            targets = {
                d.name: Target(
                    name=d.name,
                    model=d.model,
                    version=d.version,
                    state=d.state,
                    url=f"http://{self._host}:{d.port}/predict" if d.port else None,
                    inputs=tuple((c["name"], c["type"]) for c in d.signature or []),
                )
                for d in deps
            }
            proj = session.get(Project, project_id)
            assert proj is not None
            rpm = quotas.limits(session, proj)["rpm"]
        resolved = ResolvedRoute(
            project_id=project_id,
            project=project,
            name=route,
            spec=spec,
            targets=targets,
            rpm=rpm,
            expires=now + ROUTE_TTL,
            ranges=ranges_of(spec.targets),
        )
        self._routes[key] = resolved
        return resolved

    # -- the request -----------------------------------------------------------------------------

    async def predict(self, caller: Caller, project: str, route: str, rows: list[dict[str, Any]]) -> bytes:
        started = time.perf_counter()
        project_id = self._cached_authz(caller, project) or await self._db(self._authorized, caller, project)
        r = self._cached_route(project_id, project, route) or await self._db(self._resolve, project_id, project, route)
        allowed, retry_after = self.limiter.allow(project_id, r.rpm)
        if not allowed:
            self.metrics.rejected.labels(project, route, "rpm").inc()
            raise RateLimited(
                f"project {project!r} is over its quota of {r.rpm:g} requests per minute; retry in {retry_after:.0f} s",
                detail={"resource": "rpm", "limit": r.rpm, "retry_after": round(retry_after, 1)},
            )
        if len(rows) > self.settings.serving.max_rows:
            raise InvalidInput(f"rows: {len(rows)} rows in one request; at most {self.settings.serving.max_rows}")
        spec = r.spec
        extra_keys: set[str] = set()
        if spec.feature_view:
            rows, view_columns = self._fill(r, rows)
            extra_keys |= view_columns
        sticky = None
        if spec.sticky_key:
            extra_keys.add(spec.sticky_key)
            sticky = rows[0].get(spec.sticky_key)
            if sticky is None:
                raise InvalidInput(f"rows[0].{spec.sticky_key}: missing; route {route!r} assigns targets by this key")
        name = r.pick(sticky)
        target = r.targets.get(name)
        if target is None:
            raise ServiceUnavailable(f"deployment {name!r} of route {route!r} no longer exists")
        model_rows = check_rows(rows, target, extra_keys)
        request_id = uuid.uuid4().hex
        body = orjson.dumps({"rows": model_rows})
        predictions, error = await self._call(target, body)
        latency_ms = (time.perf_counter() - started) * 1000
        self._observe(r, target.name, False, latency_ms, error is None)
        self.predlog.add_predictions(
            r.project_id, project, route, request_id, target, False, model_rows, predictions, latency_ms, error
        )
        if spec.shadow and spec.shadow in r.targets:
            shadow = r.targets[spec.shadow]
            task = asyncio.create_task(self._shadow(r, shadow, request_id, model_rows, body))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        if error is not None:
            raise ServiceUnavailable(
                f"deployment {target.name!r} of route {route!r} did not answer: {error}",
                detail={"request_id": request_id, "target": target.name},
            )
        return orjson.dumps(
            {
                "request_id": request_id,
                "route": route,
                "target": target.name,
                "model": target.model,
                "model_version": target.version,
                "predictions": predictions,
            }
        )

    def _fill(self, r: ResolvedRoute, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
        """Rows completed from the route's feature view (the row's own values win over the view's), and
        the columns the view added that the model may not take (the key, a label, an id), which are
        dropped rather than refused; a column the caller sent must still be one of the model's inputs."""
        if self.features is None:
            raise ServiceUnavailable("feature views are not available on this platform")
        assert r.spec.feature_view is not None
        view = r.spec.feature_view
        key_column, _version, found = self._lookup(r, view, rows)
        out = []
        added = {key_column}
        for i, (row, values) in enumerate(zip(rows, found, strict=True)):
            if values is None:
                raise InvalidInput(
                    f"rows[{i}].{key_column}: {row.get(key_column)!r} is not in feature view {view!r}",
                    detail={"row": i, "key": row.get(key_column)},
                )
            added.update(k for k in values if k not in row)
            out.append({**values, **row})
        return out, added

    def _lookup(self, r: ResolvedRoute, view: str, rows: list[dict[str, Any]]) -> tuple[str, int | None, list[Any]]:
        key_column = self.features.key_of(r.project_id, view)
        keys = []
        for i, row in enumerate(rows):
            value = row.get(key_column)
            if value is None:
                raise InvalidInput(f"rows[{i}].{key_column}: missing; route {r.name!r} looks rows up by this key")
            keys.append(str(value))
        return self.features.lookup_many(r.project_id, view, keys)

    async def _call(self, target: Target, body: bytes) -> tuple[list[Any] | None, str | None]:
        if target.state != "ready" or target.url is None:
            return None, f"it is {target.state}"
        try:
            resp = await self.http.post(target.url, content=body, headers={"content-type": "application/json"})
        except httpx.TimeoutException:
            return None, f"no answer within {self.settings.serving.predict_timeout:g} s"
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}; it may be restarting"
        if resp.status_code != 200:
            return None, f"status {resp.status_code}: {resp.text[:300]}"
        try:
            return list(orjson.loads(resp.content)["predictions"]), None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None, "an answer without predictions"

    async def _shadow(
        self, r: ResolvedRoute, target: Target, request_id: str, rows: list[dict[str, Any]], body: bytes
    ) -> None:
        started = time.perf_counter()
        try:
            check_rows(rows, target, set())
        except InvalidInput as e:
            predictions, error = None, f"rows do not fit the shadow's inputs: {e.message}"
        else:
            predictions, error = await self._call(target, body)
        latency_ms = (time.perf_counter() - started) * 1000
        self._observe(r, target.name, True, latency_ms, error is None)
        self.predlog.add_predictions(
            r.project_id, r.project, r.name, request_id, target, True, rows, predictions, latency_ms, error
        )

    def _observe(self, r: ResolvedRoute, target: str, shadow: bool, latency_ms: float, ok: bool) -> None:
        self.stats.add(r.project_id, r.name, target, shadow, latency_ms, ok)
        labels = (r.project, r.name, target, "true" if shadow else "false")
        self.metrics.requests.labels(*labels).inc()
        if not ok:
            self.metrics.errors.labels(*labels).inc()
        self.metrics.latency.labels(*labels).observe(latency_ms / 1000)


def check_rows(rows: list[dict[str, Any]], target: Target, extra: set[str]) -> list[dict[str, Any]]:
    """The rows as the model takes them: every input present with a value of its type, nothing else
    (columns in ``extra``, the sticky and feature keys, are dropped). A model without a recorded
    signature takes the rows as they are.

    Raises:
        InvalidInput: naming the row and the column that is missing, unknown or of the wrong type.
    """
    if not target.inputs:
        return [{k: v for k, v in row.items() if k not in extra} for row in rows]
    names = [n for n, _ in target.inputs]
    known = set(names)
    out = []
    for i, row in enumerate(rows):
        unknown = [k for k in row if k not in known and k not in extra]
        if unknown:
            raise InvalidInput(
                f"rows[{i}].{unknown[0]}: not an input of model {target.model} v{target.version}; "
                f"its inputs are {', '.join(names)}",
                detail={"row": i, "field": unknown[0], "inputs": names},
            )
        clean = {}
        for name, kind in target.inputs:
            if name not in row or row[name] is None:
                raise InvalidInput(
                    f"rows[{i}].{name}: missing; model {target.model} v{target.version} needs {', '.join(names)}",
                    detail={"row": i, "field": name, "inputs": names},
                )
            value = row[name]
            if not _fits(value, kind):
                raise InvalidInput(
                    f"rows[{i}].{name}: expected {_kind_text(kind)}, got {type(value).__name__} {value!r}"[:300],
                    detail={"row": i, "field": name, "expected": kind},
                )
            clean[name] = value
        out.append(clean)
    return out


def _fits(value: Any, kind: str) -> bool:
    if kind in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind in INTEGER_TYPES:
            return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return True  # binary, datetime and others: the model decides


def _kind_text(kind: str) -> str:
    if kind in INTEGER_TYPES:
        return f"a whole number ({kind})"
    if kind in NUMBER_TYPES:
        return f"a number ({kind})"
    return {"boolean": "true or false", "string": "a string"}.get(kind, kind)
