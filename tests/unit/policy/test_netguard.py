"""The outbound URL policy: schemes, non-public addresses, the allowlist."""

from __future__ import annotations

import ipaddress

import pytest

from selfserve.errors import InvalidInput
from selfserve.policy.netguard import check_url, is_public_address


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:5432/", "loopback"),
        ("http://localhost/x", "loopback"),
        ("https://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-public"),
        ("http://[fd00::1]/", "private"),
    ],
)
def test_non_public_addresses_are_refused(url: str, kind: str) -> None:
    with pytest.raises(InvalidInput, match=rf"is an? {kind} address.*allow_private_urls"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/", "http://10.0.0.1/", "http://localhost/"])
def test_private_addresses_pass_when_allowed(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://1.1.1.1:8443/path?q=1", "http://[2606:4700::1111]/"])
def test_public_addresses_pass(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/", "file:///etc/passwd", "gopher://x/", "8.8.8.8/no-scheme"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="scheme"):
        check_url(url, allow_private=True)


def test_missing_host_and_bad_port() -> None:
    with pytest.raises(InvalidInput, match="no host"):
        check_url("http:///path", allow_private=True)
    with pytest.raises(InvalidInput, match="invalid URL"):
        check_url("http://127.0.0.1:99999/", allow_private=True)


def test_unresolvable_host() -> None:
    with pytest.raises(InvalidInput, match="cannot resolve host 'no-such-host.invalid'"):
        check_url("http://no-such-host.invalid/", allow_private=False)


def test_allowlist_by_host_and_network() -> None:
    check_url("http://localhost:9000/", allow_private=False, allowlist=["localhost"])
    check_url("http://10.1.2.3/", allow_private=False, allowlist=["10.0.0.0/8"])
    check_url("http://127.0.0.1/", allow_private=False, allowlist=["127.0.0.1"])
    with pytest.raises(InvalidInput):
        check_url("http://10.1.2.3/", allow_private=False, allowlist=["192.168.0.0/16", "not-a-network"])


def test_is_public_address() -> None:
    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert not is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public_address(ipaddress.ip_address("2002:7f00:1::"))  # 6to4 wrapping 127.0.0.1
