"""A pure-ASGI request-body limit (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"request body over the limit of {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes``, or over the limit of the first ``larger`` path
    pattern a request's path matches (file uploads, which their route limits itself)."""

    def __init__(self, app: Any, max_bytes: int, *, larger: Sequence[tuple[str, int]] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [(re.compile(pattern), limit) for pattern, limit in larger]

    def _limit(self, path: str) -> int:
        return next((limit for pattern, limit in self.larger if pattern.fullmatch(path)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send, max_bytes)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Raised inside the app's body read, so the app's handler answers 413.
                    raise _too_large(max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Any, max_bytes: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body over the limit of {max_bytes} bytes",
                    "detail": None,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
