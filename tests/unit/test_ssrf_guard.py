"""The SSRF guard on webhook URLs: what darkroom refuses to send to, whatever form the address is written in.

Property tests draw addresses from every non-public IPv4 range and write them in the forms resolvers accept
(dotted, one integer, hex, octal, IPv4-mapped and NAT64 IPv6); every form must be refused. Names are resolved through
a stubbed resolver, so no test needs the network.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom.addresses import url_problem

PRIVATE_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]


@st.composite
def private_ipv4(draw: Any) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(PRIVATE_V4))
    offset = draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
    return network.network_address + offset


def written_forms(address: ipaddress.IPv4Address) -> list[str]:
    number = int(address)
    octets = str(address).split(".")
    return [
        str(address),
        str(number),
        hex(number),
        ".".join("0" + format(int(o), "o") for o in octets),
        f"{hex(int(octets[0]))}.{number & 0xFFFFFF}",  # "0x7f.1": a first octet, then 24 bits
        f"[::ffff:{address}]",
        f"[64:ff9b::{address}]",
    ]


@settings(max_examples=300, deadline=None)
@given(private_ipv4())
def test_every_form_of_a_private_ipv4_address_is_refused(address: ipaddress.IPv4Address) -> None:
    for host in written_forms(address):
        for scheme in ("https", "http"):
            url = f"{scheme}://{host}/hook"
            assert url_problem(url, allow_http=True) is not None, url


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "https://[::1]/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://0.0.0.0/",
    ],
)
def test_the_issues_examples_are_refused(url: str) -> None:
    assert url_problem(url, allow_http=True) is not None


def test_a_name_that_resolves_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    resolves_to(monkeypatch, {"hooks.internal.example": ["10.0.0.1"], "mixed.example": ["93.184.215.14", "10.0.0.1"]})
    assert "non-public" in str(url_problem("https://hooks.internal.example/x"))
    assert "non-public" in str(url_problem("https://mixed.example/x"))  # one private answer is enough


def test_a_public_name_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    resolves_to(monkeypatch, {"hooks.example.com": ["93.184.215.14"]})
    assert url_problem("https://hooks.example.com/darkroom") is None


def test_plain_http_and_credentials_are_refused_in_production() -> None:
    assert url_problem("http://93.184.215.14/") == "it must be an https:// URL"
    assert url_problem("https://user:pw@93.184.215.14/") == "it must not carry credentials"


def test_the_local_stack_may_allow_private_receivers() -> None:
    assert url_problem("http://127.0.0.1:9000/hook", allow_http=True, allow_private=True) is None
    # ... but never a host written as a number, which resolvers read differently
    assert url_problem("http://2130706433:9000/", allow_http=True, allow_private=True) is not None


def resolves_to(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> None:
    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in names:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.parametrize(
    "url", ["https://\u2603.net/hook", "https://exa mple.com/", "https://example.com/\x00", "https://a\tb.com/"]
)
def test_urls_the_http_client_would_refuse_are_refused_first(url: str) -> None:
    # The resolver accepts a snowman (IDNA 2003) where the HTTP client refuses it (IDNA 2008) at send time
    assert url_problem(url, allow_http=True, allow_private=True) is not None
