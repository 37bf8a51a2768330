"""selfserve: a single-node, batteries-included, self-service data and ML platform.

``import selfserve`` stays light: the client and the errors load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.errors import (
        Conflict,
        InvalidInput,
        NotFound,
        PayloadTooLarge,
        PermissionDenied,
        QuotaExceeded,
        RateLimited,
        SelfServeError,
        ServiceUnavailable,
        Unauthenticated,
    )

__all__ = [
    "Client",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "SelfServeError",
    "ServiceUnavailable",
    "Unauthenticated",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from selfserve.client import Client

        return Client
    if name in __all__:
        from selfserve import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'selfserve' has no attribute {name!r}")
