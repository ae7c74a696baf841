"""The local API Gateway: HTTP on 127.0.0.1 in, HTTP API (payload 2.0) proxy events out, routes from template.yaml.

Like API Gateway it answers unknown routes and methods with 404 itself, CORS preflights from the template's settings,
malformed requests with 400 and bodies over its payload quota with 413, always in its own JSON
(`{"message": "..."}`), never as Python's http.server would (HTML, 501, a hang or a dropped connection).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from darkroom_local.http_server import BackgroundHTTPServer
from darkroom_local.template import FunctionSpec

PAYLOAD_LIMIT = 10 * 1024 * 1024  # API Gateway's request payload quota (HTTP API, not adjustable)
READ_TIMEOUT_S = 30.0  # a client that stops sending mid-request is answered, not waited for forever
LINGER_S = 5.0  # at most this long, what a refused client still sends is read and dropped before closing
LINGER_QUIET_S = 1.0  # ... or until it has sent nothing for this long
MAX_CHUNK_LINE = 4096
# The stdlib's own refusals, as API Gateway words them: it routes any method (none matches: 404) and speaks HTTP/1.x.
_GATEWAY_STATUS: dict[int, int] = {HTTPStatus.NOT_IMPLEMENTED: 404, HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: 400}
_MESSAGES: dict[int, str] = {HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "Request Entity Too Large"}


class HttpFunction(Protocol):
    spec: FunctionSpec

    def invoke(self, event: dict[str, Any]) -> Any: ...


Route = tuple[str, re.Pattern[str], str, HttpFunction]


class _Refusal(Exception):
    """A request the front answers itself, with this status, and then closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def gateway_body(status: int) -> bytes:
    """API Gateway's own answer body, byte for byte: `{"message":"Not Found"}`."""
    message = _MESSAGES.get(status) or HTTPStatus(status).phrase
    return json.dumps({"message": message}, separators=(",", ":")).encode()


def compile_routes(functions: Sequence[HttpFunction]) -> list[Route]:
    routes = []
    for function in functions:
        for method, path in function.spec.http_routes:
            pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
            routes.append((method, pattern, path, function))
    return routes


def http_api_event(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    route_path: str,
    path_params: dict[str, str],
    source_ip: str,
) -> dict[str, Any]:
    url = urlsplit(target)
    now = datetime.now(UTC)
    text_body: str | None = None
    is_base64 = False
    if body:
        try:
            text_body = body.decode()
        except UnicodeDecodeError:
            text_body, is_base64 = base64.b64encode(body).decode(), True
    query = _joined(parse_qsl(url.query, keep_blank_values=True))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route_path}",
        "rawPath": url.path,
        "rawQueryString": url.query,
        # As API Gateway does, the front says how the client reached it (here always plain HTTP).
        "headers": {**{k.lower(): v for k, v in headers.items()}, "x-forwarded-proto": "http"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": f"{method} {route_path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = path_params
    if text_body is not None:
        event["body"] = text_body
    return event


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Repeated names joined with commas, as payload 2.0 gives repeated query parameters and headers."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


class ApiFront(BackgroundHTTPServer):
    thread_name = "api-front"

    def __init__(
        self,
        functions: Sequence[HttpFunction],
        cors: dict[str, Any] | None = None,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.handler = _FrontHandler
        self.routes = compile_routes(functions)
        self.cors = cors or {}
        self.read_timeout_s = read_timeout_s

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        if not origin or not self.cors:
            return {}
        allowed = self.cors.get("AllowOrigins", [])
        if "*" not in allowed and origin not in allowed:
            return {}
        return {"access-control-allow-origin": "*" if "*" in allowed else origin}


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def front(self) -> ApiFront:
        return self.server.owner  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.front.read_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        """The stdlib's, except that every method reaches `_handle`: API Gateway answers any method it has no route
        for with 404, where the stdlib answers 501 for a method without a `do_` method."""
        self.raw_requestline = b""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return  # answered by send_error or handle_expect_100
            self._handle()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True  # idle between requests: close, as any server does
            if self.raw_requestline:  # stalled within its headers: a request, so it gets an answer
                self._refuse(_Refusal(HTTPStatus.BAD_REQUEST))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's refusals (request line, headers, version) in API Gateway's JSON rather than HTML."""
        self._refuse(_Refusal(_GATEWAY_STATUS.get(code, code)))

    def handle_expect_100(self) -> bool:
        try:
            self._body_length()  # refuse a body it would not take before the client sends it
        except _Refusal as refusal:
            self._refuse(refusal)
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        try:
            if self.request_version == "HTTP/0.9":
                raise _Refusal(HTTPStatus.BAD_REQUEST)
            body = self._read_body()
        except _Refusal as refusal:
            self._refuse(refusal)
            return
        method = self.command.upper()
        path = urlsplit(self.path).path
        origin = self.headers.get("origin")
        if method == "OPTIONS" and origin:
            self._preflight(origin)
            return
        for route_method, pattern, route_path, function in self.front.routes:
            match = pattern.match(path)
            if match and route_method == method:
                event = http_api_event(
                    method,
                    self.path,
                    _joined((name.lower(), value) for name, value in self.headers.items()),
                    body,
                    route_path,
                    match.groupdict(),
                    self.client_address[0],
                )
                try:
                    status, data, headers = self._result(function.invoke(event), origin)
                except Exception:
                    # A crash or a result API Gateway cannot read: its 500, with the cause in the stack's output.
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)
                    raise
                self._write(status, data, headers)
                return
        self._send(HTTPStatus.NOT_FOUND)

    # Request bodies

    def _body_length(self) -> int | None:
        """The declared body length, None for a chunked body; a _Refusal for framing API Gateway would not accept."""
        encodings = self.headers.get_all("transfer-encoding") or []
        lengths = self.headers.get_all("content-length") or []
        if encodings:
            # Both framings at once is how requests are smuggled past proxies; only plain chunked is decoded.
            if lengths or ",".join(encodings).strip().lower() != "chunked":
                raise _Refusal(HTTPStatus.BAD_REQUEST)
            return None
        if not lengths:
            return 0
        values = {value.strip() for value in lengths}
        (value,) = values if len(values) == 1 else ("",)
        if not re.fullmatch(r"[0-9]+", value):  # int() would take "-1", " 1_0 " and other digits
            raise _Refusal(HTTPStatus.BAD_REQUEST)
        length = int(value) if len(value) <= 12 else PAYLOAD_LIMIT + 1
        if length > PAYLOAD_LIMIT:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return length

    def _read_body(self) -> bytes:
        length = self._body_length()
        if length is None:
            return self._read_chunked()
        return self._read_exactly(length)

    def _read_exactly(self, length: int) -> bytes:
        try:
            data = self.rfile.read(length) if length else b""
        except TimeoutError:
            raise _Refusal(HTTPStatus.BAD_REQUEST) from None
        if len(data) < length:  # the client stopped sending or closed mid-body
            raise _Refusal(HTTPStatus.BAD_REQUEST)
        return data

    def _read_line(self) -> bytes:
        try:
            line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        except TimeoutError:
            raise _Refusal(HTTPStatus.BAD_REQUEST) from None
        if len(line) > MAX_CHUNK_LINE or not line.endswith(b"\n"):
            raise _Refusal(HTTPStatus.BAD_REQUEST)
        return line

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
                raise _Refusal(HTTPStatus.BAD_REQUEST)
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > PAYLOAD_LIMIT:
                raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            body += self._read_exactly(size)
            if self._read_line().strip():
                raise _Refusal(HTTPStatus.BAD_REQUEST)
        for _ in range(100):  # trailer fields, dropped, up to the empty line
            if not self._read_line().strip():
                return bytes(body)
        raise _Refusal(HTTPStatus.BAD_REQUEST)

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer and close: after a refusal nothing more on this connection can be trusted."""
        try:
            self._send(refusal.status, close=True)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # the answer is whole: the client reads it, then EOF
            self._linger()
        except OSError:
            self.close_connection = True  # the client is gone: nobody left to answer

    def _linger(self) -> None:
        """Read and drop what the client is still sending (the rest of a body, of a header), for a while: closing
        a socket with unread data resets the connection, which can destroy the answer before the client reads it,
        and a client still writing a body it was refused would never get to read the answer at all."""
        deadline = time.monotonic() + LINGER_S
        while (left := deadline - time.monotonic()) > 0:
            self.connection.settimeout(min(left, LINGER_QUIET_S))
            if not self.rfile.read1(1 << 16):
                return

    # Answers

    def _preflight(self, origin: str) -> None:
        cors = self.front.cors
        headers = self.front.cors_headers(origin)
        if headers:
            headers.update(
                {
                    "access-control-allow-methods": ",".join(cors.get("AllowMethods", [])),
                    "access-control-allow-headers": ",".join(cors.get("AllowHeaders", [])),
                    "access-control-max-age": str(cors.get("MaxAge", 0)),
                }
            )
        self._write(204, b"", headers)

    def _result(self, result: dict[str, Any], origin: str | None) -> tuple[int, bytes, dict[str, str]]:
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        headers = {**(result.get("headers") or {}), **self.front.cors_headers(origin)}
        return int(result.get("statusCode", 200)), data, headers

    def _send(self, status: int, *, close: bool = False) -> None:
        self._write(status, gateway_body(status), {"content-type": "application/json"}, close)

    def _write(self, status: int, data: bytes, headers: dict[str, str], close: bool = False) -> None:
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.1"  # else the stdlib writes a bare body, as to an HTTP/0.9 client
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        if close:
            self.send_header("connection", "close")  # also makes the stdlib close it once answered
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
