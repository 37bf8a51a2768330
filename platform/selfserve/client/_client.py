from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import quote

import httpx

from selfserve import schemas
from selfserve.client import _credentials
from selfserve.client._data import DatasetsClient, JobsClient, ProductsClient, SourcesClient
from selfserve.client._features import FeaturesClient
from selfserve.client._ml import MLflowClient
from selfserve.client._models import ExperimentsClient, ModelsClient
from selfserve.client._monitoring import AlertsClient, MonitorsClient
from selfserve.client._nouns import (
    AuditClient,
    MembersClient,
    ProjectsClient,
    QuotasClient,
    TokensClient,
    UsersClient,
)
from selfserve.client._pipelines import FlowsClient, RunsClient
from selfserve.client._routes import ROUTES
from selfserve.client._serving import DeploymentsClient, RoutesClient
from selfserve.errors import InvalidInput, ServiceUnavailable, Unauthenticated, error_from_response
from selfserve.settings import get_client_settings

DEFAULT_URL = "http://127.0.0.1:8700"


class Client:
    """The Python SDK: one facade over the REST API, one sub-client per noun.

    Args:
        url: The API URL. Default: ``SELFSERVE_URL``, then the saved login's, then the local default.
        token: An API token. Default: ``SELFSERVE_TOKEN``, then the saved login's.
        timeout: Seconds before a call gives up.
        transport: An httpx transport (tests pass one to reach an in-process app).

    Every error the server raises comes back as the same :class:`selfserve.SelfServeError` subclass.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            cfg = get_client_settings()
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise InvalidInput(f"invalid client setting: {str(e).splitlines()[0:3]}") from None
        self._config_dir = cfg.config_dir
        saved = _credentials.load(cfg.config_dir) if (url is None or token is None) else {}
        self.url = (url or cfg.url or saved.get("url") or DEFAULT_URL).rstrip("/")
        env_token = cfg.token.get_secret_value() if cfg.token else None
        self._token: str | None = token or env_token or saved.get("token")
        self._timeout = timeout or cfg.timeout
        self._transport = transport

    @cached_property
    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=self._timeout, transport=self._transport)

    # -- sub-clients --------------------------------------------------------------------
    @cached_property
    def tokens(self) -> TokensClient:
        return TokensClient(self)

    @cached_property
    def users(self) -> UsersClient:
        return UsersClient(self)

    @cached_property
    def projects(self) -> ProjectsClient:
        return ProjectsClient(self)

    @cached_property
    def members(self) -> MembersClient:
        return MembersClient(self)

    @cached_property
    def quotas(self) -> QuotasClient:
        return QuotasClient(self)

    @cached_property
    def audit(self) -> AuditClient:
        return AuditClient(self)

    @cached_property
    def sources(self) -> SourcesClient:
        return SourcesClient(self)

    @cached_property
    def datasets(self) -> DatasetsClient:
        return DatasetsClient(self)

    @cached_property
    def jobs(self) -> JobsClient:
        return JobsClient(self)

    @cached_property
    def products(self) -> ProductsClient:
        return ProductsClient(self)

    @cached_property
    def flows(self) -> FlowsClient:
        return FlowsClient(self)

    @cached_property
    def runs(self) -> RunsClient:
        return RunsClient(self)

    @cached_property
    def experiments(self) -> ExperimentsClient:
        return ExperimentsClient(self)

    @cached_property
    def models(self) -> ModelsClient:
        return ModelsClient(self)

    @cached_property
    def mlflow(self) -> MLflowClient:
        return MLflowClient(self)

    @cached_property
    def deployments(self) -> DeploymentsClient:
        return DeploymentsClient(self)

    @cached_property
    def routes(self) -> RoutesClient:
        return RoutesClient(self)

    @cached_property
    def features(self) -> FeaturesClient:
        return FeaturesClient(self)

    @cached_property
    def monitors(self) -> MonitorsClient:
        return MonitorsClient(self)

    @cached_property
    def alerts(self) -> AlertsClient:
        return AlertsClient(self)

    # -- session ------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self._token

    def login(self, username: str, password: str, *, save: bool = True) -> schemas.LoginResponse:
        """Log in; with ``save`` the token is kept for later clients and the CLI."""
        data = self._request("login", json={"username": username, "password": password}, auth=False)
        resp = schemas.LoginResponse.model_validate(data)
        self._token = resp.token
        if save:
            _credentials.save(self._config_dir, self.url, resp.token, resp.user.name)
        return resp

    def logout(self) -> None:
        """Revoke the current token and forget the saved login."""
        token = self._token
        try:
            if token:
                self._request("logout")
        finally:
            self._token = None
            # Forget the saved login only if it is this client's: signing out of the console must
            # not log out a CLI that runs as the same OS user with its own token.
            if token is None or _credentials.load(self._config_dir).get("token") == token:
                _credentials.clear(self._config_dir)

    def whoami(self) -> schemas.WhoAmI:
        return schemas.WhoAmI.model_validate(self._request("whoami"))

    def change_password(self, current: str, new: str) -> None:
        self._request("change_password", json={"current_password": current, "new_password": new})

    def health(self) -> schemas.Health:
        return schemas.Health.model_validate(self._request("health", auth=False))

    def roles(self) -> list[schemas.RolePublic]:
        return [schemas.RolePublic.model_validate(r) for r in self._request("roles")]

    def close(self) -> None:
        if "_http" in self.__dict__:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------
    def _request(
        self,
        route: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        **path: Any,
    ) -> Any:
        method, url, headers = self._prepare(route, auth, path)
        try:
            resp = self._http.request(method, url, json=json, params=params, headers=headers, files=files, data=data)
        except httpx.TransportError as e:
            raise ServiceUnavailable(
                f"cannot reach the selfserve API at {self.url} ({type(e).__name__}); is it running? "
                "Start it with `selfserve up`."
            ) from None
        self._raise_for_status(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def _prepare(self, route: str, auth: bool, path: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
        method, template = ROUTES[route]
        url = template.format(**{k: _segment(k, v) for k, v in path.items()})
        headers = {}
        if auth:
            if not self._token:
                raise Unauthenticated("not logged in: run `selfserve login` or pass a token")
            headers["Authorization"] = f"Bearer {self._token}"
        return method, url, headers

    @staticmethod
    def _raise_for_status(resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise error_from_response(resp.status_code, body)

    def _download(self, route: str, dest: Any, *, params: dict[str, Any] | None = None, **path: Any) -> None:
        """Stream a file response to ``dest`` (written whole or not at all)."""
        method, url, headers = self._prepare(route, True, path)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream(method, url, params=params, headers=headers) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for_status(resp)
                with tmp.open("wb") as out:
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
            tmp.replace(dest)
        except httpx.TransportError as e:
            raise ServiceUnavailable(f"cannot reach the selfserve API at {self.url} ({type(e).__name__})") from None
        finally:
            tmp.unlink(missing_ok=True)


def _segment(key: str, value: Any) -> str:
    """One path value, encoded so that it stays one segment of the route it was meant for.

    The server decodes ``%2F`` before routing and httpx removes ``.``/``..`` segments, so
    ``datasets.delete(p, "..")`` would reach ``DELETE /projects/p`` and ``"x/contract"`` another
    route: a ``/`` is refused here, and dot segments are sent encoded (the server refuses them).

    Raises:
        InvalidInput: the value holds a ``/``.
    """
    text = str(value)
    if "/" in text:
        raise InvalidInput(f"invalid {key} {text[:70]!r}: a name cannot contain '/'")
    encoded = quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded
