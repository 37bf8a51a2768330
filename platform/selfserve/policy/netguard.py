"""Outbound URL policy: which addresses URL-based sources and webhooks may reach.

On a shared host, a user-supplied URL must not become a way into the machine's own services
(``127.0.0.1:5432``), the private network, or a cloud metadata endpoint (``169.254.169.254``).
:func:`check_url` resolves the host and refuses every non-public address unless the admin allowed
private URLs (``data.allow_private_urls``) or listed the host or network in an allowlist.

The check happens before connecting; a hostile DNS server could still answer differently on the
second lookup (DNS rebinding). Callers that follow redirects must check every hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from selfserve.errors import InvalidInput

__all__ = ["check_url", "is_public_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = ("http", "https")


def is_public_address(address: IPAddress) -> bool:
    """True if ``address`` is a global unicast address (not loopback, private, link-local...)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_loopback or address.is_link_local
    )


def _describe(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for attribute, label in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "an unspecified"),
        ("is_reserved", "a reserved"),
        ("is_private", "a private"),
    ):
        if getattr(address, attribute):
            return label
    return "a non-public"


def _allowed(host: str, addresses: list[IPAddress], allowlist: Sequence[str]) -> bool:
    for entry in allowlist:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host:
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if addresses and all(a in network for a in addresses):
            return True
    return False


def _resolve(host: str, port: int | None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone index
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_url(url: str, *, allow_private: bool, allowlist: Sequence[str] = ()) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a non-public address.

    Args:
        url: The URL a user gave (a source, a webhook).
        allow_private: Let the URL reach loopback, private, link-local and reserved addresses
            (the embedded single-machine default; false on shared hosts).
        allowlist: Host names (exact) or addresses/networks in CIDR form that are allowed even when
            they are private, e.g. ``["minio", "10.1.0.0/16"]``.

    Raises:
        InvalidInput: the scheme is not http or https, the URL has no host, the host does not
            resolve, or one of its addresses is not public and neither ``allow_private`` nor the
            allowlist lets it through. The message names the host and the kind of address.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"invalid URL: {exc}") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidInput(f"URL scheme {parts.scheme or '(none)'!r} is not allowed: use http or https")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidInput("URL has no host")
    if allow_private:
        return
    addresses = _resolve(host, port)
    if _allowed(host, addresses, allowlist):
        return
    for address in addresses:
        if not is_public_address(address):
            shown = host if host == str(address) else f"{host} ({address})"
            raise InvalidInput(
                f"URL host {shown} is {_describe(address)} address, which this platform does not allow "
                "(an admin can set data.allow_private_urls or allowlist the host)"
            )
