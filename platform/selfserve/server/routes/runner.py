"""Routes for the platform's own run launchers, and the Prefect proxy runs report through.

Not for people: the runner routes take the platform's runner key (which only the worker holds),
the proxy takes a run's token and lets it reach only its own flow run in Prefect.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import uuid
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from selfserve.errors import NotFound, PermissionDenied, SelfServeError, ServiceUnavailable, Unauthenticated
from selfserve.pipelines import proxy, runner
from selfserve.policy.tokens import authenticate, hash_token
from selfserve.schemas import Model
from selfserve.server.deps import SessionDep, action

log = logging.getLogger(__name__)
router = APIRouter(prefix="/runner", tags=["runner"])
PROXY_PREFIX = "/prefect"
# Headers not passed on between a run and Prefect.
_HOP = {"host", "authorization", "content-length", "connection", "transfer-encoding", "accept-encoding", "cookie"}


def require_runner(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    expected = request.app.state.settings.runner_key()
    if scheme.lower() != "bearer" or not key or not hmac.compare_digest(key.encode(), expected.encode()):
        raise Unauthenticated("the runner routes take the platform's runner key")


RunnerDep = Annotated[None, Depends(require_runner)]


class Heartbeat(Model):
    cpu_seconds: float = Field(0.0, ge=0)
    rss_bytes: int = Field(0, ge=0)


class Finish(Model):
    cpu_seconds: float = Field(0.0, ge=0)
    max_rss_bytes: int = Field(0, ge=0)
    exit_code: int
    note: str | None = Field(None, max_length=2000)


def _pipelines(request: Request) -> Any:
    return request.app.state.pipelines


@router.post("/runs/{flow_run_id}/start", include_in_schema=False, openapi_extra=action("runner:start", "runner"))
def start_run(flow_run_id: str, request: Request, _: RunnerDep, session: SessionDep) -> dict[str, Any]:
    """A launcher starts a run: it gets the run's token, code, environment and limits."""
    pipelines = _pipelines(request)
    _check_id(flow_run_id)
    ctx = runner.start(session, pipelines.settings, pipelines.prefect, flow_run_id)
    session.commit()
    return ctx


@router.post(
    "/runs/{flow_run_id}/heartbeat",
    status_code=204,
    include_in_schema=False,
    openapi_extra=action("runner:heartbeat", "runner"),
)
def heartbeat(flow_run_id: str, body: Heartbeat, _: RunnerDep, session: SessionDep) -> None:
    _check_id(flow_run_id)
    runner.heartbeat(session, flow_run_id, body.cpu_seconds, body.rss_bytes)
    session.commit()


@router.post(
    "/runs/{flow_run_id}/finish",
    status_code=204,
    include_in_schema=False,
    openapi_extra=action("runner:finish", "runner"),
)
def finish(flow_run_id: str, body: Finish, _: RunnerDep, session: SessionDep) -> None:
    _check_id(flow_run_id)
    runner.finish(
        session,
        flow_run_id,
        cpu_seconds=body.cpu_seconds,
        max_rss_bytes=body.max_rss_bytes,
        exit_code=body.exit_code,
        note=body.note,
    )
    session.commit()


def _check_id(flow_run_id: str) -> None:
    try:
        uuid.UUID(flow_run_id)
    except ValueError:
        raise NotFound(f"flow run {flow_run_id!r} not found") from None


# -- the proxy ------------------------------------------------------------------------------------


def _run_token(header: str) -> str:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, token = base64.b64decode(value).decode().partition(":")
        except ValueError:
            raise Unauthenticated("malformed credentials") from None
        if user == "run":
            return token
    elif scheme.lower() == "bearer" and value:
        return value
    raise Unauthenticated("a run's token is required")


def _scope_for(request_app: Any, session: Any, token: str) -> proxy.RunScope:
    caller = authenticate(session, token)
    scopes: proxy.Scopes = request_app.state.run_scopes
    # Keyed by the token's hash, never its row id: ids of deleted tokens can be reused.
    key = hash_token(token)
    scope = scopes.get(key)
    if scope is not None:
        return scope
    record = runner.run_of_token(session, caller.token_id)
    if record is None:
        raise Unauthenticated("this token belongs to no running run")
    fr = request_app.state.pipelines.prefect.read_flow_run(record.flow_run_id) or {}
    scope = proxy.RunScope(
        flow_run_id=record.flow_run_id,
        deployment_id=str(fr.get("deployment_id")) if fr.get("deployment_id") else None,
        flow_id=str(fr.get("flow_id")) if fr.get("flow_id") else None,
        work_queue_id=str(fr.get("work_queue_id")) if fr.get("work_queue_id") else None,
        work_pool=fr.get("work_pool_name"),
    )
    scopes.put(key, scope)
    return scope


@router.api_route(
    PROXY_PREFIX + "/{path:path}",
    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
    include_in_schema=False,
    openapi_extra=action("runner:prefect", "runner"),
)
async def prefect_proxy(path: str, request: Request, session: SessionDep) -> Response:
    app = request.app
    # Authenticate first, so that a caller without a run's token learns nothing, pipelines on or off.
    token = _run_token(request.headers.get("authorization", ""))
    scope = await run_in_threadpool(_scope_for, app, session, token)
    if not app.state.pipelines.enabled:
        raise ServiceUnavailable("pipelines are not enabled on this platform")
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    why = proxy.decide(scope, request.method, path, body)
    if why is not None:
        log.info("run %s refused %s %s: %s", scope.flow_run_id, request.method, path, why)
        raise PermissionDenied(f"{request.method} {path.split('?')[0]}: {why}")
    client: httpx.AsyncClient = app.state.prefect_http
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    try:
        upstream = await client.request(request.method, path, params=request.query_params, content=raw, headers=headers)
    except httpx.HTTPError as e:
        raise ServiceUnavailable(f"the pipeline engine is not reachable: {type(e).__name__}") from None
    if upstream.status_code < 300 and request.method == "POST":
        with contextlib.suppress(ValueError):
            proxy.learn(scope, request.method, path, body, upstream.json())
    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type",)}
    return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)


@router.websocket(PROXY_PREFIX + "/events/in")
async def events_in(websocket: WebSocket) -> None:
    """Prefect's event stream from a run: authenticated with the run's token, relayed to Prefect."""
    import websockets
    from websockets.typing import Subprotocol

    app = websocket.app
    await websocket.accept(subprotocol="prefect")
    try:
        first = json.loads(await websocket.receive_text())
        if not isinstance(first, dict) or first.get("type") != "auth":
            raise Unauthenticated("expected an auth message")
        token = str(first.get("token") or "")
        token = token.split(":", 1)[1] if token.startswith("run:") else token
        store = app.state.store
        with store.session() as session:
            scope = await run_in_threadpool(_scope_for, app, session, token)
        if not app.state.pipelines.enabled:
            raise ServiceUnavailable("pipelines are not enabled on this platform")
    except WebSocketDisconnect:
        return
    except (SelfServeError, ValueError) as e:
        log.warning("event stream refused: %s", e)
        await websocket.send_text(json.dumps({"type": "auth_failure", "reason": "a run's token is required"}))
        await websocket.close(code=1008)
        return
    settings = app.state.settings
    url = settings.prefect_url.replace("http://", "ws://").replace("https://", "wss://") + "/events/in"
    auth = settings.prefect_auth_string()
    basic = base64.b64encode(auth.encode()).decode()
    try:
        async with websockets.connect(
            url,
            subprotocols=[Subprotocol("prefect")],
            additional_headers={"Authorization": f"Basic {basic}"},
        ) as upstream:
            await upstream.send(json.dumps({"type": "auth", "token": auth}))
            answer = json.loads(await upstream.recv())
            if answer.get("type") != "auth_success":
                await websocket.close(code=1011)
                return
            await websocket.send_text(json.dumps({"type": "auth_success"}))
            while True:
                message = await websocket.receive_text()
                try:
                    event = json.loads(message)
                except ValueError:
                    continue
                why = proxy.decide_event(scope, event)
                if why is not None:  # dropped, as Prefect drops what it cannot use: the run goes on
                    log.info("run %s: event dropped: %s", scope.flow_run_id, why)
                    continue
                proxy.learn_from_event(scope, event)
                await upstream.send(message)
    except WebSocketDisconnect:
        return
    except Exception as e:  # the engine went away: the run's events client reconnects
        log.warning("event relay for run %s ended: %s: %s", scope.flow_run_id, type(e).__name__, e)
        await websocket.close(code=1011)
