"""The embedded runtime: ``selfserve up`` starts, checks and stops the platform's local processes.

The services are declared in :func:`services` (one :class:`ServiceSpec` each); :func:`up`,
:func:`status` and :func:`down` supervise them; :func:`selfserve.runtime.demo.demo` seeds the
demo content (imported from its module, which later parts extend).
"""

from __future__ import annotations

from selfserve.runtime._services import ServiceSpec, services
from selfserve.runtime.supervisor import (
    DownResult,
    ServiceStatus,
    StartFailed,
    StatusReport,
    UpResult,
    configure,
    down,
    login_admin,
    status,
    up,
)

__all__ = [
    "DownResult",
    "ServiceSpec",
    "ServiceStatus",
    "StartFailed",
    "StatusReport",
    "UpResult",
    "configure",
    "down",
    "login_admin",
    "services",
    "status",
    "up",
]
