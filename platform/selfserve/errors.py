"""The exception tree shared by the server, the SDK and the CLI.

    SelfServeError                 500 internal
    ├── InvalidInput               422 invalid_input
    ├── Unauthenticated            401 unauthenticated
    ├── PermissionDenied           403 permission_denied
    ├── NotFound                   404 not_found
    ├── Conflict                   409 conflict
    ├── PayloadTooLarge            413 payload_too_large
    ├── QuotaExceeded              429 quota_exceeded
    ├── RateLimited                429 rate_limited
    └── ServiceUnavailable         503 service_unavailable

Service code raises these; one handler on the server turns them into
``{"error": {"code", "message", "detail"}}`` with the class's status, and the SDK turns
that body back into the same class.
"""

from __future__ import annotations

from typing import Any


class SelfServeError(Exception):
    """Root of every error selfserve raises on purpose."""

    status_code: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class InvalidInput(SelfServeError):
    """The request is well formed but a value in it is not acceptable."""

    status_code = 422
    code = "invalid_input"


class Unauthenticated(SelfServeError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    status_code = 401
    code = "unauthenticated"


class PermissionDenied(SelfServeError):
    """The principal is known and may see the target, but not do this to it."""

    status_code = 403
    code = "permission_denied"


class NotFound(SelfServeError):
    """The target does not exist, or the principal may not learn that it does."""

    status_code = 404
    code = "not_found"


class Conflict(SelfServeError):
    """The target already exists or is in a state that forbids the change."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(SelfServeError):
    """The request body is over the configured limit."""

    status_code = 413
    code = "payload_too_large"


class QuotaExceeded(SelfServeError):
    """The work would take the project over one of its quotas."""

    status_code = 429
    code = "quota_exceeded"


class RateLimited(SelfServeError):
    """Too many requests or attempts in a window; retry later."""

    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(SelfServeError):
    """A platform service the request needs is not running or not answering."""

    status_code = 503
    code = "service_unavailable"


ERRORS_BY_CODE: dict[str, type[SelfServeError]] = {
    cls.code: cls
    for cls in (
        SelfServeError,
        InvalidInput,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        Conflict,
        PayloadTooLarge,
        QuotaExceeded,
        RateLimited,
        ServiceUnavailable,
    )
}


def error_from_response(status_code: int, body: Any) -> SelfServeError:
    """Rebuild the server's exception from an HTTP error response body."""
    code, message, detail = None, None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code, message, detail = err.get("code"), err.get("message"), err.get("detail")
    cls = ERRORS_BY_CODE.get(code or "")
    if cls is None:
        cls = next(
            (c for c in ERRORS_BY_CODE.values() if c.status_code == status_code and c is not SelfServeError),
            SelfServeError,
        )
    return cls(message or f"HTTP {status_code}", detail=detail)
