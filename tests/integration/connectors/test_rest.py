"""The ``rest`` connector against a local JSON API with page, offset and cursor pagination."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest

from selfserve.data.connectors import build
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from selfserve.settings import get_settings
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration

TOKEN = "T0ken-Very-Secret"
ITEMS = [{"id": i, "name": f"item {i}", "price": i * 1.5, "meta": {"even": i % 2 == 0}} for i in range(23)]


class Api(BaseHTTPRequestHandler):
    """/page?page&per_page, /offset?offset&limit, /cursor?cursor, /private (needs the token), errors."""

    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        type(self).requests.append(self.path)
        items = [i for i in ITEMS if "since" not in q or i["id"] > int(q["since"])]
        if parts.path == "/page":
            size, page = int(q.get("per_page", 10)), int(q.get("page", 1))
            self._send(200, {"data": {"items": items[(page - 1) * size : page * size]}})
        elif parts.path == "/offset":
            offset, limit = int(q["offset"]), min(int(q["limit"]), 4)  # the server caps the limit
            self._send(200, {"results": items[offset : offset + limit]})
        elif parts.path == "/cursor":
            start = int(q.get("cursor", 0))
            nxt = start + 5 if start + 5 < len(items) else None
            self._send(200, {"records": items[start : start + 5], "meta": {"next": nxt}})
        elif parts.path == "/list":
            self._send(200, items[:3])
        elif parts.path == "/private":
            if self.headers.get("Authorization") != f"Bearer {TOKEN}" or self.headers.get("X-Key") != "k-1":
                self._send(401, {"error": f"bad token {self.headers.get('Authorization')}"})
            else:
                self._send(200, {"data": {"items": items[:2]}})
        elif parts.path == "/forever":
            self._send(200, {"data": {"items": items[:1]}})  # ignores the page parameter
        elif parts.path == "/html":
            self._send(200, "<html>hello</html>", "text/html")
        elif parts.path == "/boom":
            self._send(503, {"error": "overloaded"})
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/list")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, {"error": "no such endpoint"})


@pytest.fixture
def api() -> Iterator[str]:
    Api.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rest(url: str, secrets: dict[str, Any] | None = None, **config: Any) -> Connector:
    return build("rest", {"url": url, **config}, secrets or {})


def test_page_pagination(api: str) -> None:
    c = rest(f"{api}/page", records_path="data.items", pagination={"type": "page", "page_size": 10})
    c.test()
    table, sizes = read_all(c, batch_rows=8)
    assert sizes == [8, 8, 7]
    assert table.column("id").to_pylist() == list(range(23))
    assert table.schema.field("id").type == pa.int64() and table.schema.field("price").type == pa.float64()
    assert json.loads(table.column("meta")[0].as_py()) == {"even": True}
    assert Api.requests[-1] == "/page?page=4&per_page=10"  # stopped on the empty page


def test_offset_pagination_follows_what_came_back(api: str) -> None:
    c = rest(f"{api}/offset", records_path="results", pagination={"type": "offset", "limit": 10})
    table, _ = read_all(c)
    assert table.column("id").to_pylist() == list(range(23))
    assert "offset=4&limit=10" in Api.requests[-6]


def test_cursor_pagination(api: str) -> None:
    c = rest(
        f"{api}/cursor",
        records_path="records",
        pagination={"type": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor"},
    )
    table, sizes = read_all(c, batch_rows=100)
    assert table.column("id").to_pylist() == list(range(23)) and sizes == [23]
    assert len(Api.requests) == 5 and Api.requests[1] == "/cursor?cursor=5"


def test_body_is_the_list_and_redirects(api: str) -> None:
    table, _ = read_all(rest(f"{api}/list"))
    assert table.num_rows == 3
    table, _ = read_all(rest(f"{api}/redirect"))
    assert table.num_rows == 3


def test_incremental(api: str) -> None:
    c = rest(f"{api}/page", records_path="data.items", pagination={"type": "page"})
    table, _ = read_all(c, cursor_column="id", watermark=19)
    assert table.column("id").to_pylist() == [20, 21, 22]
    c = rest(f"{api}/page", records_path="data.items", pagination={"type": "page"}, incremental_param="since")
    table, _ = read_all(c, cursor_column="id", watermark=20)
    assert table.column("id").to_pylist() == [21, 22]
    assert "since=20" in Api.requests[-1]


def test_token_and_secret_headers(api: str) -> None:
    secrets = {"token": TOKEN, "secret_headers": {"X-Key": "k-1"}}
    table, _ = read_all(rest(f"{api}/private", secrets, records_path="data.items"))
    assert table.num_rows == 2
    # The API echoes the bad token in its error: the message must not.
    wrong = {"token": "Wr0ng-T0ken-Value", "secret_headers": {"X-Key": "k-1"}}
    with pytest.raises(InvalidInput, match=r"refused the credentials \(HTTP 401\)") as err:
        read_all(rest(f"{api}/private", wrong, records_path="data.items"))
    assert "Wr0ng-T0ken-Value" not in str(err.value) and "***" in str(err.value)


def test_max_pages_guard(api: str) -> None:
    c = rest(f"{api}/forever", records_path="data.items", pagination={"type": "page"}, max_pages=5)
    with pytest.raises(InvalidInput, match="max_pages=5"):
        read_all(c)
    assert len(Api.requests) == 5


def test_bad_answers(api: str, closed_port: int) -> None:
    with pytest.raises(InvalidInput, match="did not answer JSON"):
        read_all(rest(f"{api}/html"))
    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        read_all(rest(f"{api}/boom"))
    with pytest.raises(InvalidInput, match="HTTP 404"):
        read_all(rest(f"{api}/nope"))
    with pytest.raises(InvalidInput, match=r"records_path 'data.rows' is not in the response \(top level: data\)"):
        read_all(rest(f"{api}/page", records_path="data.rows"))
    with pytest.raises(InvalidInput, match="not a list"):
        read_all(rest(f"{api}/page", records_path="data"))
    with pytest.raises(ServiceUnavailable, match="cannot reach"):
        read_all(rest(f"http://127.0.0.1:{closed_port}/x"))


def test_bad_config() -> None:
    with pytest.raises(InvalidInput, match="method"):
        rest("http://127.0.0.1/x", method="POST")
    with pytest.raises(InvalidInput, match="http"):
        rest("file:///etc/passwd")
    with pytest.raises(InvalidInput, match="pagination"):
        rest("http://127.0.0.1/x", pagination={"type": "page", "page_size": 0})


def test_private_url_refused_when_not_allowed(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_DATA__ALLOW_PRIVATE_URLS", "false")
    get_settings.cache_clear()
    c = build("rest", {"url": f"{api}/list"}, {}, get_settings())
    with pytest.raises(InvalidInput, match="loopback address"):
        read_all(c)
    assert Api.requests == []
