"""The local API Gateway: HTTP on 127.0.0.1 in, HTTP API (payload 2.0) proxy events out, routes from template.yaml.

Like API Gateway it answers unknown routes with 404 itself and CORS preflights from the template's settings.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from darkroom_local.http_server import BackgroundHTTPServer
from darkroom_local.lambdas import LocalFunction

Route = tuple[str, re.Pattern[str], str, LocalFunction]


def compile_routes(functions: list[LocalFunction]) -> list[Route]:
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
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route_path}",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": {k.lower(): v for k, v in headers.items()},
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


class ApiFront(BackgroundHTTPServer):
    thread_name = "api-front"

    def __init__(self, functions: list[LocalFunction], cors: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.handler = _FrontHandler
        self.routes = compile_routes(functions)
        self.cors = cors or {}

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

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
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
                    dict(self.headers.items()),
                    body,
                    route_path,
                    match.groupdict(),
                    self.client_address[0],
                )
                try:
                    result = function.invoke(event)
                except Exception:
                    self._send(500, {"message": "Internal Server Error"})
                    raise
                self._send_result(result, origin)
                return
        self._send(404, {"message": "Not Found"})

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _handle

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

    def _send_result(self, result: dict[str, Any], origin: str | None) -> None:
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        headers = {**(result.get("headers") or {}), **self.front.cors_headers(origin)}
        self._write(int(result.get("statusCode", 200)), data, headers)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        self._write(status, json.dumps(body).encode(), {"content-type": "application/json"})

    def _write(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
