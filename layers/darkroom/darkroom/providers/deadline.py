"""A deadline for a whole HTTP call, which httpx does not have: its timeouts apply to each read and write.

A server that sends its headers or its body a byte at a time resets a per-read timeout forever, and would outlast
the worker's invocation (Lambda then kills it mid-job). Every network operation made inside `within(seconds)` is
given at most the time left, and fails with httpcore's own timeout once none is, so httpx reports it like any
other timeout: a read timeout (ambiguous), or a connect or write timeout (the request never went out whole).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from darkroom.addresses import AddressRefused, public_addresses

_local = threading.local()
_WRITE_PIECE = 64 * 1024
# httpx's own defaults (httpx.Limits()), which a pool built by hand would otherwise lose: without the keep-alive expiry
# a connection idle for minutes between invocations is reused, and a middlebox that dropped it resets the next call.
_MAX_CONNECTIONS = 100
_MAX_KEEPALIVE = 20
_KEEPALIVE_EXPIRY_S = 5.0


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Calls made by this thread inside the block end by `seconds` from now."""
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # In pieces, each given what is left, since the stream applies a timeout to every send() and a server that
        # reads slowly but steadily would stretch one large write far past the deadline. Nothing to send (h11's
        # end of message) is no write at all, and must not time out a request already sent whole.
        for start in range(0, len(buffer), _WRITE_PIECE):
            self._stream.write(buffer[start : start + _WRITE_PIECE], _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> _Stream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, *, public_only: bool = False) -> None:
        self._backend = httpcore.SyncBackend()
        self._public_only = public_only

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        if not self._public_only:
            return _Stream(self._backend.connect_tcp(host, port, left, local_address, socket_options))
        # The checked addresses are the ones connected to, each in turn; TLS still verifies the certificate against
        # the host name.
        try:
            addresses = public_addresses(host, port)
        except AddressRefused as exc:
            raise httpcore.ConnectError(str(exc)) from None
        for address in addresses[:-1]:
            try:
                return _Stream(self._backend.connect_tcp(address, port, left, local_address, socket_options))
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_tcp(addresses[-1], port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def transport(*, public_only: bool = False) -> httpx.HTTPTransport:
    """httpx's own transport, its connections made through the deadline-aware backend; with `public_only`, only to
    public addresses (darkroom.addresses), for URLs that come from outside.

    httpx offers no parameter for the network backend, so its pool is the one HTTPTransport() would build (its
    defaults, its TLS context) plus that backend; __init__, which would build a second pool and TLS context only to
    be discarded, is skipped. Environment proxies (HTTPS_PROXY) are not used for provider calls: httpx reads them only
    when no transport is given."""
    built = httpx.HTTPTransport.__new__(httpx.HTTPTransport)
    built._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=_MAX_CONNECTIONS,
        max_keepalive_connections=_MAX_KEEPALIVE,
        keepalive_expiry=_KEEPALIVE_EXPIRY_S,
        network_backend=_Backend(public_only=public_only),
    )
    return built


def client(given: httpx.BaseTransport | None = None, *, public_only: bool = False) -> httpx.Client:
    """An httpx client for provider calls, on the `given` transport (tests) or this module's. It never follows
    redirects (a redirecting answer is a failure, not a new place to send darkroom's key or to fetch from), and asks
    for answers as they are: httpx decodes a compressed body whole, past any size check (a gzip bomb of 1.8 KB
    decoded to 1 GB), and images barely compress anyway."""
    return httpx.Client(
        transport=given or transport(public_only=public_only),
        follow_redirects=False,
        headers={"Accept-Encoding": "identity"},
    )


class KeyedClient:
    """What every provider adapter holds: its base URL, its key (fetched when first needed, so a rotated one is
    picked up), and one HTTP client built on first use and shared by the invocation's threads."""

    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = client(self._transport)
            return self._client

    def prepare(self) -> None:
        """Fetch the key and build the HTTP client now, so the first call starts at once."""
        self._api_key()
        self._http()
