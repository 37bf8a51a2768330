"""The embedded services, declared once: what to run, on which port, and how to tell it is healthy.

Adding a service to ``selfserve up`` is one more :class:`ServiceSpec` in :func:`services`; the
supervisor starts, checks and stops every entry alike.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from selfserve.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """One process the embedded platform runs.

    Attributes:
        name: Short name, used for the log file (``<log_dir>/<name>.log``) and in messages.
        argv: The command line.
        host: The address the service listens on.
        port: The port it listens on; checked to be free before anything starts.
        health_path: Path that answers 200 once the service is ready.
        url: Where users reach the service.
        port_setting: The dotted settings field that sets ``port``, named in errors (``server.api_port``).
        port_flag: The ``selfserve up`` flag that overrides ``port``, if there is one.
        env: Variables set for the process on top of the supervisor's environment.
    """

    name: str
    argv: tuple[str, ...]
    host: str
    port: int
    health_path: str
    url: str
    port_setting: str
    port_flag: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def health_url(self) -> str:
        return f"http://{local_address(self.host)}:{self.port}{self.health_path}"

    @property
    def port_env(self) -> str:
        """The environment variable of ``port_setting``: ``server.api_port`` -> ``SELFSERVE_SERVER__API_PORT``."""
        return "SELFSERVE_" + self.port_setting.upper().replace(".", "__")

    @property
    def port_hint(self) -> str:
        """How to choose another port, for error messages."""
        flag = f"`selfserve up {self.port_flag} PORT` or " if self.port_flag else ""
        return f"{flag}{self.port_env} (setting {self.port_setting})"


def local_address(host: str) -> str:
    """The address a local client connects to for a server bound to ``host`` (URL-ready)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def api_file_roots(settings: Settings) -> list[str]:
    """The directories ``file`` sources may read on the embedded platform: the admin's, and the demo's
    bundled sample CSVs (read only by sources; the demo's scheduled ingest reloads from there)."""
    from selfserve.runtime.demo import DATA

    roots = [str(p) for p in settings.data.file_roots] + [str(DATA.resolve())]
    return list(dict.fromkeys(roots))


def services(settings: Settings) -> list[ServiceSpec]:
    """The services ``selfserve up`` runs, in start order, configured from ``settings``."""
    host = settings.server.host
    python = sys.executable
    # Children read the same settings tree; these are the values the supervisor may have changed
    # (flags) or resolved (home), so they are passed explicitly rather than trusted to match.
    common = {
        "SELFSERVE_HOME": str(settings.home),
        "SELFSERVE_SERVER__HOST": host,
        "SELFSERVE_SERVER__API_PORT": str(settings.server.api_port),
        "SELFSERVE_SERVER__CONSOLE_PORT": str(settings.server.console_port),
        "SELFSERVE_PIPELINES__ENABLED": str(settings.pipelines.enabled).lower(),
        "SELFSERVE_PIPELINES__PREFECT_PORT": str(settings.pipelines.prefect_port),
        "SELFSERVE_PIPELINES__WORKER_PORT": str(settings.pipelines.worker_port),
        "SELFSERVE_MODELS__ENABLED": str(settings.models.enabled).lower(),
        "SELFSERVE_MODELS__MLFLOW_PORT": str(settings.models.mlflow_port),
        "SELFSERVE_SERVING__ENABLED": str(settings.serving.enabled).lower(),
        "SELFSERVE_SERVING__RUNTIME_PORT": str(settings.serving.runtime_port),
        "PYTHONUNBUFFERED": "1",
    }
    console_port = settings.server.console_port
    specs = pipeline_services(settings, common) if settings.pipelines.enabled else []
    if settings.models.enabled:
        specs.append(mlflow_service(settings, common))
        if settings.serving.enabled:
            specs.append(serving_service(settings, common))
    return specs + [
        ServiceSpec(
            name="api",
            argv=(python, "-m", "selfserve.server"),
            host=host,
            port=settings.server.api_port,
            health_path="/api/v1/health",
            url=settings.api_url,
            port_setting="server.api_port",
            port_flag="--api-port",
            env={**common, "SELFSERVE_DATA__FILE_ROOTS": json.dumps(api_file_roots(settings))},
        ),
        ServiceSpec(
            name="console",
            argv=(
                python,
                "-m",
                "streamlit",
                "run",
                str(settings.console.app_path),
                "--server.headless",
                "true",
                "--server.address",
                host,
                "--server.port",
                str(console_port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
                "--client.toolbarMode",
                "minimal",
                "--theme.primaryColor",
                "#4f46e5",
            ),  # fmt: skip
            host=host,
            port=console_port,
            health_path="/_stcore/health",
            url=f"http://{local_address(host)}:{console_port}",
            port_setting="server.console_port",
            port_flag="--console-port",
            env={**common, "SELFSERVE_URL": settings.api_url},
        ),
    ]


def pipeline_services(settings: Settings, common: Mapping[str, str]) -> list[ServiceSpec]:
    """The Prefect server (bound to 127.0.0.1, behind its auth string) and the platform's worker."""
    python = sys.executable
    pipes = settings.pipelines
    auth = settings.prefect_auth_string()
    prefect_home = settings.home / "prefect"
    prefect_env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    # The worker talks to Prefect's REST API with the platform's settings; it loads no Prefect client.
    worker_env = dict(common)
    return [
        ServiceSpec(
            name="prefect",
            argv=(python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(pipes.prefect_port)),
            host="127.0.0.1",
            port=pipes.prefect_port,
            health_path="/api/health",
            url=f"http://127.0.0.1:{pipes.prefect_port}",
            port_setting="pipelines.prefect_port",
            env=prefect_env,
        ),
        ServiceSpec(
            name="worker",
            argv=(python, "-m", "selfserve.pipelines.worker"),
            host="127.0.0.1",
            port=pipes.worker_port,
            health_path="/health",
            url=f"http://127.0.0.1:{pipes.worker_port}",
            port_setting="pipelines.worker_port",
            env=worker_env,
        ),
    ]


def mlflow_service(settings: Settings, common: Mapping[str, str]) -> ServiceSpec:
    """The MLflow tracking server under basic auth (``selfserve.ml.server`` writes its auth config and
    starts it), bound to 127.0.0.1; users reach it with their own accounts, the API with the admin's."""
    port = settings.models.mlflow_port
    return ServiceSpec(
        name="mlflow",
        argv=(sys.executable, "-m", "selfserve.ml.server"),
        host="127.0.0.1",
        port=port,
        health_path="/health",
        url=f"http://127.0.0.1:{port}",
        port_setting="models.mlflow_port",
        env={**common, "SELFSERVE_MODELS__MLFLOW_HOST": "127.0.0.1"},
    )


def serving_service(settings: Settings, common: Mapping[str, str]) -> ServiceSpec:
    """The serving runtime, which runs a BentoML server per deployment; the API reaches it (nudges, logs)
    with the runner key, the gateway reaches its deployments on the ports recorded in their rows."""
    serving = settings.serving
    return ServiceSpec(
        name="serving",
        argv=(sys.executable, "-m", "selfserve.serving.runtime"),
        host=serving.runtime_host,
        port=serving.runtime_port,
        health_path="/health",
        url=f"http://{local_address(serving.runtime_host)}:{serving.runtime_port}",
        port_setting="serving.runtime_port",
        env=dict(common),
    )
