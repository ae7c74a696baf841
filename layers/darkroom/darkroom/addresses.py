"""The SSRF guard: darkroom connects to URLs others give it (a provider's output links, later webhook targets) only
when every address their host resolves to is on the public internet.

Refused: private, loopback, link-local (169.254.169.254, the instance metadata service), CGNAT (100.64/10),
unique-local IPv6, multicast, reserved and unspecified addresses, and IPv6 forms that embed one of them (IPv4-mapped,
6to4, Teredo). The caller connects to the address checked here, never to a second lookup of the name, so a host
that answers a public address once and a private one the next time (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit


class AddressRefused(OSError):
    """The host resolves to an address darkroom must not connect to (or does not resolve at all)."""


# IPv6 ranges whose last 32 bits are an IPv4 address a host may reach through them: IPv4-compatible (deprecated),
# NAT64's well-known prefix, SIIT's IPv4-translated form. IPv4-mapped, 6to4 and Teredo have Python's own accessors.
_EMBEDDING_IPV4 = tuple(ipaddress.ip_network(n) for n in ("::/96", "64:ff9b::/96", "::ffff:0:0:0/96"))
# Not public whatever Python's tables say in a given version: NAT64 for local use, site-local (deprecated), and the
# IPv4 special-purpose ranges (IETF protocol assignments, "this network", CGNAT, benchmarking, reserved), some of
# whose members Python counts as global (192.0.0.8, found by the property tests).
_NEVER_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "64:ff9b:1::/48",
        "fec0::/10",
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "240.0.0.0/4",
    )
)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scoped IPv6 address carries its zone after %
    if any(ip.version == network.version and ip in network for network in _NEVER_PUBLIC):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in network for network in _EMBEDDING_IPV4):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses of `host` to connect to, in the resolver's order, after checking that every one is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"cannot resolve {host!r}: {exc.__class__.__name__}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise AddressRefused(f"{host!r} resolves to no address")
    refused = [address for address in addresses if not is_public(address)]
    if refused:
        raise AddressRefused(f"{host!r} resolves to a non-public address")
    return list(dict.fromkeys(addresses))


# A host written as a number ("2130706433", "0x7f.1", "0177.0.0.1"): resolvers read these as IPv4 addresses in ways
# that differ between libraries, so a URL written so is refused outright rather than interpreted.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)


def url_problem(url: str, *, allow_http: bool = False, allow_private: bool = False) -> str | None:
    """Why darkroom will not send to `url` (a webhook target), or None. Resolves the host unless `allow_private`;
    checked again at send time, when the connection goes to the addresses checked then."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "it contains white space or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme not in (("https", "http") if allow_http else ("https",)):
        return "it must be an https:// URL"
    host = parts.hostname
    if not host:
        return "it has no host"
    if parts.username or parts.password:
        return "it must not carry credentials"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_HOST.fullmatch(host):
            return "its host is written as a number; write the address in dotted form or use a name"
        if not host.isascii() and not _valid_idn(host):
            return "its host is not a valid international domain name"
    if allow_private:
        return None
    try:
        public_addresses(host, port or (443 if parts.scheme == "https" else 80))
    except AddressRefused as exc:
        return str(exc).replace(repr(host), "its host")
    return None


def _valid_idn(host: str) -> bool:
    """Whether the HTTP client will accept this non-ASCII host: it encodes names by IDNA 2008 (the `idna` package),
    where the resolver's own codec is IDNA 2003 and accepts more (a snowman)."""
    import idna

    try:
        idna.encode(host.lower())
    except (idna.IDNAError, UnicodeError):
        return False
    return True
