"""The one place where exceptions become HTTP responses, and where failures are audited."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from selfserve.errors import SelfServeError
from selfserve.policy import audit
from selfserve.policy.audit import AuditRecord
from selfserve.server.deps import ACTION_KEY

log = logging.getLogger("selfserve.server")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def _route_action(request: Request) -> str | None:
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    return extra.get(ACTION_KEY)


def _audit_failure(request: Request, exc: SelfServeError) -> None:
    rec: AuditRecord | None = getattr(exc, "audit", None)
    caller = getattr(request.state, "caller", None)
    if rec is None and request.method in MUTATING and caller is not None:
        rec = AuditRecord(
            principal=caller.name,
            action=_route_action(request) or f"{request.method} {request.url.path}",
            project=request.path_params.get("project"),
            outcome=f"error:{exc.code}",
            detail={"message": exc.message[:500]},
        )
    if rec is None:
        return
    try:
        with request.app.state.store.begin() as session:
            audit.add(session, rec)
    except Exception:  # the response must still go out; the failure is logged
        log.exception("could not write audit record %s", rec)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(SelfServeError)
    async def _selfserve(request: Request, exc: SelfServeError) -> JSONResponse:
        _audit_failure(request, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            field = _field(tuple(e.get("loc", ())))
            if e.get("type") == "json_invalid":
                field, msg = "body", f"malformed JSON ({(e.get('ctx') or {}).get('error', 'cannot parse')})"
            errors.append({"field": field, "message": msg, "type": e.get("type")})
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(error_body("invalid_input", f"invalid input: {summary}", errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", "internal error; the platform's log has the details"), status_code=500
        )
