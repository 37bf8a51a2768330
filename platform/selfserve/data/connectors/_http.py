"""HTTP for URL-based sources: every request (redirects included) passes the URL policy first."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable
from selfserve.policy.netguard import check_url
from selfserve.settings import Settings

if TYPE_CHECKING:
    import httpx


def guarded_client(settings: Settings, *, headers: dict[str, str] | None = None, timeout: float = 30.0) -> httpx.Client:
    """An ``httpx.Client`` that checks each request's URL against ``data.allow_private_urls``.

    Proxies and ``.netrc`` from the server's environment are ignored (``trust_env=False``): a user's
    source must not borrow the server's credentials.
    """
    import httpx

    allow_private = settings.data.allow_private_urls

    def _guard(request: httpx.Request) -> None:
        check_url(str(request.url), allow_private=allow_private)

    return httpx.Client(
        headers=headers,
        timeout=timeout,
        follow_redirects=True,
        max_redirects=5,
        trust_env=False,
        event_hooks={"request": [_guard]},
    )


def check_response(response: httpx.Response, label: str) -> None:
    """Raise the platform error for an HTTP error status.

    Raises:
        InvalidInput: 4xx (credentials refused, not found, bad request), with a short body excerpt.
        ServiceUnavailable: 429 and 5xx, which may pass.
    """
    status = response.status_code
    if status < 400:
        return
    try:
        excerpt = response.read()[:300].decode("utf-8", "replace").strip()
    except Exception:  # the body is only a hint for the message
        excerpt = ""
    tail = f": {excerpt}" if excerpt else ""
    if status in (401, 403):
        raise InvalidInput(f"{label} refused the credentials (HTTP {status}){tail}")
    if status == 429 or status >= 500:
        raise ServiceUnavailable(f"{label} answered HTTP {status}, try again later{tail}")
    raise InvalidInput(f"{label} answered HTTP {status}{tail}")


def translate_http_error(exc: Exception, label: str) -> SelfServeError | None:
    """Map httpx's transport errors: unreachable or too slow -> ServiceUnavailable."""
    import httpx

    if isinstance(exc, httpx.TooManyRedirects):
        return InvalidInput(f"{label}: too many redirects")
    if isinstance(exc, httpx.TimeoutException):
        return ServiceUnavailable(f"{label} did not answer in time: {exc}")
    if isinstance(exc, httpx.TransportError):
        return ServiceUnavailable(f"cannot reach {label}: {exc}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return InvalidInput(f"invalid URL {label}: {exc}")
    return None


def download(client: httpx.Client, url: str, dest: IO[bytes], *, max_bytes: int, label: str | None = None) -> None:
    """Stream ``url`` into ``dest``.

    Raises:
        InvalidInput: an error status, or more than ``max_bytes`` bytes.
        ServiceUnavailable: unreachable, 429 or 5xx.
    """
    label = label or url
    with client.stream("GET", url) as response:
        check_response(response, label)
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise InvalidInput(f"{label} is larger than the {max_bytes} bytes a download may hold")
            dest.write(chunk)


def url_name(url: str) -> str:
    """The last path segment of a URL (for its extension), e.g. ``data.csv``."""
    from urllib.parse import unquote, urlsplit

    path = urlsplit(url).path
    return unquote(path.rsplit("/", 1)[-1]) or "download"
