"""The control plane: ``create_app()`` builds the FastAPI app; ``bootstrap()`` prepares its DB."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from selfserve import __version__
from selfserve.settings import Settings, get_settings
from selfserve.store import Store

log = logging.getLogger("selfserve.server")
API_PREFIX = "/api/v1"
ADMIN_CREDENTIALS_FILE = "admin-credentials.txt"


def bootstrap(settings: Settings, store: Store) -> tuple[str, str] | None:
    """Migrate the DB and create the first admin if there is none.

    Returns:
        (name, password) when the admin was created now. A generated password is also written,
        0600, to ``<home>/admin-credentials.txt`` so its owner can read it once more; a password
        given in settings is not copied anywhere.

    Raises:
        RuntimeError: outside embedded mode, the secret key is unset or a placeholder.
    """
    from selfserve.policy.identity import bootstrap_admin

    settings.resolved_secret_key()  # outside embedded mode, refuse to start with a placeholder
    store.migrate()
    with store.begin() as session:
        created = bootstrap_admin(session)
    if created is not None and settings.platform.admin_password is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        path = settings.home / ADMIN_CREDENTIALS_FILE
        _write_private(path, f"user: {created[0]}\npassword: {created[1]}\n")
    return created


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the API. Nothing connects until the first request (or the lifespan's bootstrap)."""
    from selfserve.data.jobs import JobRunner
    from selfserve.data.objectstore import from_settings as object_store_from
    from selfserve.ml.registry import Registry
    from selfserve.pipelines.proxy import Scopes
    from selfserve.pipelines.service import Pipelines
    from selfserve.policy.provisioning import build_all
    from selfserve.server import errors
    from selfserve.server.limits import BodyLimitMiddleware
    from selfserve.server.routes import (
        audit,
        auth,
        datasets,
        features,
        flows,
        meta,
        mlflow,
        models,
        monitoring,
        products,
        projects,
        quotas,
        runner,
        serving,
        sources,
        tokens,
        users,
    )
    from selfserve.serving.service import Runtime

    settings = settings or get_settings()
    store = store or Store(settings.database_url, echo=settings.database.echo)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.server.threads
        created = bootstrap(settings, store)
        if created:
            log.warning(
                "created the first admin %r; its password is in %s", created[0], settings.home / ADMIN_CREDENTIALS_FILE
            )
        app.state.jobs.recover()
        reconciler = None
        if settings.pipelines.enabled:
            import httpx

            from selfserve.pipelines.reconciler import Reconciler

            user, _, password = settings.prefect_auth_string().partition(":")
            app.state.prefect_http = httpx.AsyncClient(
                base_url=settings.prefect_url + "/", auth=(user, password), timeout=60
            )
            reconciler = Reconciler(settings, store, app.state.pipelines)
            reconciler.start()
        feature_sync = FeatureSync(app.state.features, app.state.object_store)
        feature_sync.start()
        predlog = app.state.gateway.predlog if app.state.gateway is not None else None
        if predlog is not None:
            predlog.start()
        yield
        if predlog is not None:
            await app.state.gateway.close()
            await anyio.to_thread.run_sync(predlog.close)
        feature_sync.stop()
        app.state.features.close()
        if reconciler is not None:
            reconciler.stop()
            await app.state.prefect_http.aclose()
            app.state.pipelines.close()
        app.state.jobs.shutdown()
        app.state.registry.close()
        store.dispose()

    app = FastAPI(
        title="selfserve",
        version=__version__,
        description="Self-service data and ML platform: the control plane.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.provisioners = build_all(settings, store)
    app.state.object_store = object_store_from(settings)
    app.state.jobs = JobRunner(store)
    app.state.pipelines = Pipelines(settings, app.state.object_store)
    app.state.run_scopes = Scopes()
    app.state.registry = Registry(settings)
    app.state.serving_runtime = Runtime(settings)
    from selfserve.serving.features import FeatureSync, OnlineFeatures

    app.state.features = OnlineFeatures(settings, store)
    app.state.gateway = None
    if settings.serving.enabled:
        from selfserve.serving.gateway import Gateway
        from selfserve.serving.predlog import PredictionLog

        predictions = PredictionLog(settings, store, app.state.object_store)
        app.state.gateway = Gateway(settings, store, predictions, app.state.features)
    errors.install(app)
    # Serving first: Starlette tries routes in order, and predict is the hot path.
    modules = (
        serving,
        meta,
        auth,
        tokens,
        users,
        projects,
        quotas,
        audit,
        sources,
        datasets,
        products,
        flows,
        runner,
        models,
        mlflow,
        features,
        monitoring,
    )
    for module in modules:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(serving.metrics_router, prefix=API_PREFIX)
    # A file upload is limited by data.max_upload_bytes (plus its multipart envelope), not by the JSON limit.
    uploads = (datasets.UPLOAD_PATH, settings.data.max_upload_bytes + datasets.UPLOAD_ENVELOPE_BYTES)
    code = (flows.DEPLOY_PATH, settings.pipelines.max_code_bytes + flows.DEPLOY_ENVELOPE_BYTES)
    reports = (monitoring.RECORD_PATH, settings.monitoring.max_report_bytes + monitoring.RECORD_ENVELOPE_BYTES)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes, larger=[uploads, code, reports])
    return app
