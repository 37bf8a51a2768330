"""``rest``: a paged JSON API (page number, offset/limit or next-cursor pagination), GET only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator

from selfserve.data.connectors._common import RowBatcher, SourceConfig, SourceConnector, dot_path, filter_after
from selfserve.data.connectors._http import check_response, guarded_client, translate_http_error
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError
from selfserve.policy.netguard import check_url


class NoPagination(SourceConfig):
    """One request, one page."""

    type: Literal["none"] = "none"


class PagePagination(SourceConfig):
    """``?page=1&per_page=100``, then page 2, 3... until a page comes back empty."""

    type: Literal["page"] = "page"
    page_param: str = Field("page", description="Query parameter holding the page number.")
    size_param: str | None = Field("per_page", description="Query parameter holding the page size (None: not sent).")
    page_size: int = Field(100, ge=1, le=100_000, description="Records asked per page.")
    start_page: int = Field(1, ge=0, description="Number of the first page.")


class OffsetPagination(SourceConfig):
    """``?offset=0&limit=100``, the offset moving by the records received, until a page comes back empty."""

    type: Literal["offset"] = "offset"
    offset_param: str = Field("offset", description="Query parameter holding the offset.")
    limit_param: str = Field("limit", description="Query parameter holding the limit.")
    limit: int = Field(100, ge=1, le=100_000, description="Records asked per page.")


class CursorPagination(SourceConfig):
    """The body names the next page's cursor; send it back until it is missing or the page is empty."""

    type: Literal["cursor"] = "cursor"
    cursor_path: str = Field(description="Dot path of the next cursor in the body, e.g. meta.next_cursor.")
    cursor_param: str = Field("cursor", description="Query parameter to send the cursor in.")


Pagination = Annotated[NoPagination | PagePagination | OffsetPagination | CursorPagination, Field(discriminator="type")]


class RestConfig(SourceConfig):
    """A JSON API answering GET with records at ``records_path``."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"token", "secret_headers", "secret_params"})

    url: str = Field(description="The endpoint (http or https).")
    method: Literal["GET"] = Field("GET", description="Only GET: a source is never written to.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (not secret).")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Fixed query parameters.")
    records_path: str | None = Field(
        None, description="Dot path of the records array, e.g. data.items; none: the body."
    )
    pagination: Pagination = Field(default_factory=NoPagination, description="How to get the next page.")
    max_pages: int = Field(1000, ge=1, le=1_000_000, description="Stop with an error after this many pages.")
    incremental_param: str | None = Field(
        None, description="Query parameter to send the watermark in, for APIs that filter by it themselves."
    )
    fields: list[str] | None = Field(None, description="Record fields to keep as columns; default: all of them.")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per request.")
    pause_seconds: float = Field(0.0, ge=0, le=60, description="Wait between page requests, to spare the API.")
    token: SecretStr | None = Field(None, description="Bearer token (secret).")
    secret_headers: dict[str, SecretStr] = Field(default_factory=dict, description="Headers holding secrets.")
    secret_params: dict[str, SecretStr] = Field(default_factory=dict, description="Query parameters holding secrets.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.lower().startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return v


class RestConnector(SourceConnector[RestConfig]):
    """Pages through a JSON API with httpx; every request (and redirect) passes the URL policy."""

    kind: ClassVar[str] = "rest"
    config_model = RestConfig

    def _client(self) -> Any:
        o = self.options
        headers = {"Accept": "application/json", **o.headers}
        headers.update({k: v.get_secret_value() for k, v in o.secret_headers.items()})
        if o.token is not None:
            headers["Authorization"] = f"Bearer {o.token.get_secret_value()}"
        check_url(o.url, allow_private=self.settings.data.allow_private_urls)
        return guarded_client(self.settings, headers=headers, timeout=o.timeout)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            k: (str(v).lower() if isinstance(v, bool) else v) for k, v in self.options.params.items()
        }
        params.update({k: v.get_secret_value() for k, v in self.options.secret_params.items()})
        return params

    def _get(self, client: Any, params: dict[str, Any]) -> Any:
        response = client.get(self.options.url, params=params)
        check_response(response, self.options.url)
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            kind = response.headers.get("content-type", "unknown type")
            raise InvalidInput(f"{self.options.url} did not answer JSON ({kind})") from None

    def _records(self, body: Any, page: int) -> list[dict[str, Any]]:
        path = self.options.records_path
        found, records = dot_path(body, path)
        if not found:
            if page == 1:
                keys = ", ".join(list(body)[:20]) if isinstance(body, dict) else type(body).__name__
                raise InvalidInput(f"records_path {path!r} is not in the response (top level: {keys})")
            return []
        if records is None:
            return []
        if not isinstance(records, list):
            raise InvalidInput(f"the records at {path or 'the top level'!r} are a {type(records).__name__}, not a list")
        bad = next((r for r in records if not isinstance(r, dict)), None)
        if bad is not None:
            raise InvalidInput(f"the records at {path or 'the top level'!r} hold a {type(bad).__name__}, not objects")
        return records

    def _pages(self, client: Any, request: ReadRequest) -> Iterator[list[dict[str, Any]]]:
        o = self.options
        p = o.pagination
        params = self._params()
        if o.incremental_param and request.watermark is not None:
            params[o.incremental_param] = request.watermark
        page_number = p.start_page if isinstance(p, PagePagination) else 0
        offset = 0
        cursor: Any = None
        for page in range(1, o.max_pages + 1):
            if page > 1 and o.pause_seconds:
                time.sleep(o.pause_seconds)
            query = dict(params)
            if isinstance(p, PagePagination):
                query[p.page_param] = page_number
                if p.size_param:
                    query[p.size_param] = p.page_size
            elif isinstance(p, OffsetPagination):
                query[p.offset_param] = offset
                query[p.limit_param] = p.limit
            elif isinstance(p, CursorPagination) and cursor is not None:
                query[p.cursor_param] = cursor
            body = self._get(client, query)
            records = self._records(body, page)
            if records:
                yield records
            if isinstance(p, NoPagination) or not records:
                return
            if isinstance(p, PagePagination):
                page_number += 1
            elif isinstance(p, OffsetPagination):
                offset += len(records)
            elif isinstance(p, CursorPagination):
                _, following = dot_path(body, p.cursor_path)
                if following in (None, "") or following == cursor:
                    return
                cursor = following
        raise InvalidInput(
            f"{o.url} still had pages after max_pages={o.max_pages}: raise max_pages, or check the pagination "
            "settings (an API that ignores the page parameter repeats its first page)"
        )

    def _test(self) -> None:
        with self._client() as client:
            self._records(self._get(client, self._params()), 1)

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.query is not None:
            raise InvalidInput("rest sources take no query")
        batcher = RowBatcher(self.options.fields)
        pending: list[dict[str, Any]] = []
        with self._client() as client:
            for records in self._pages(client, request):
                pending.extend(records)
                while len(pending) >= request.batch_rows:
                    chunk, pending = pending[: request.batch_rows], pending[request.batch_rows :]
                    yield from self._emit(batcher, chunk, request)
            if pending:
                yield from self._emit(batcher, pending, request)

    def _emit(self, batcher: RowBatcher, rows: list[dict[str, Any]], request: ReadRequest) -> Iterator[pa.RecordBatch]:
        batch = filter_after(batcher.batch(rows), request.cursor_column, request.watermark)
        if batch.num_rows:
            yield batch

    def _translate(self, exc: Exception) -> SelfServeError | None:
        return translate_http_error(exc, self.options.url)
