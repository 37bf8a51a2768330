"""Identity, tokens, roles, ``authorize()``, quotas, usage and audit: the platform's one policy point."""

from selfserve.policy.authz import Caller, authorize, require_admin

__all__ = ["Caller", "authorize", "require_admin"]
