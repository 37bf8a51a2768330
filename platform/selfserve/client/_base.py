from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter

if TYPE_CHECKING:
    from selfserve.client._client import Client

M = TypeVar("M", bound=BaseModel)


class SubClient:
    """Base of the per-noun sub-clients: holds the facade and parses responses into schema models."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(self, route: str, *, json: Any = None, params: dict[str, Any] | None = None, **path: Any) -> Any:
        return self._client._request(route, json=json, params=params, **path)

    @staticmethod
    def _one(model: type[M], data: Any) -> M:
        return model.model_validate(data)

    @staticmethod
    def _many(model: type[M], data: Any) -> list[M]:
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
