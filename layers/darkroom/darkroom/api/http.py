"""A small router for API Gateway HTTP API (payload 2.0) events.

darkroom's API has six routes; powertools' resolver with validation costs more import time on a cold start than
the whole rest of the function (see docs/decisions.md), so routing is done here and validation by pydantic models.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from darkroom import aws
from darkroom.errors import DarkroomError, InvalidRequest, MethodNotAllowed, NotFound, ServiceUnavailable
from darkroom.observability import logger


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    request_id: str
    path_params: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    received_at: float = field(default_factory=time.monotonic)
    # The domain API Gateway answered on (its own or a custom one); only a test's event lacks it.
    domain: str = ""

    def elapsed_s(self) -> float:
        return time.monotonic() - self.received_at

    @property
    def base_url(self) -> str:
        """The API's address as the client reached it: the domain API Gateway routed the request by (a Host header
        naming another would never have reached it), else the Host header; X-Forwarded-Proto says the scheme."""
        host = self.domain or self.headers.get("host", "")
        if not host or not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", host):
            return ""
        proto = self.headers.get("x-forwarded-proto", "https").split(",")[0].strip().lower()
        return f"{'http' if proto == 'http' else 'https'}://{host}"

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Request:
        context = event.get("requestContext") or {}
        raw = event.get("body") or ""
        body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
        return cls(
            method=(context.get("http") or {}).get("method", "GET").upper(),
            path=event.get("rawPath") or "/",
            headers={k.lower(): v for k, v in (event.get("headers") or {}).items()},
            query=dict(event.get("queryStringParameters") or {}),
            body=body,
            request_id=str(context.get("requestId", "")),
            received_at=_received_at(context.get("timeEpoch")),
            domain=str(context.get("domainName") or ""),
        )

    def json(self) -> Any:
        content_type = self.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise InvalidRequest(
                "Send the body as JSON with 'Content-Type: application/json'.", field="content-type", rule="json_only"
            )
        if not self.body.strip():
            raise InvalidRequest("The request body is empty; send a JSON object.", field="body", rule="body_empty")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"The body is not valid JSON: {exc}.", field="body", rule="json_invalid") from None
        except RecursionError:
            raise InvalidRequest("The body is nested too deeply.", field="body", rule="json_too_deep") from None


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        if isinstance(self.body, str):  # a page, whose headers carry its own content type
            headers = {"content-type": "text/plain; charset=utf-8", **self.headers}
            return {"statusCode": self.status, "headers": headers, "body": self.body, "isBase64Encoded": False}
        # UTF-8 rather than \u escapes: a non-Latin prompt would otherwise take up to six times the bytes. But a
        # client's own text echoed in an error may hold a lone surrogate, which has no UTF-8: then escape it all.
        body = json.dumps(self.body, ensure_ascii=False)
        try:
            body.encode()
        except UnicodeEncodeError:
            body = json.dumps(self.body)
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json", **self.headers},
            "body": body,
            "isBase64Encoded": False,
        }


def _received_at(time_epoch_ms: Any) -> float:
    """When API Gateway received the request, on this process's monotonic clock: its 30-second limit counts from
    then, a cold start included. Now, when the event does not say or says something impossible."""
    now = time.monotonic()
    if isinstance(time_epoch_ms, bool) or not isinstance(time_epoch_ms, int | float):
        return now
    age_s = time.time() - time_epoch_ms / 1000
    return now - age_s if 0 < age_s < 30 else now


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    public: bool
    summary: str
    pattern: re.Pattern[str]


class Router:
    def __init__(self, authenticate: Callable[[Request], str]) -> None:
        self.routes: list[Route] = []
        self._authenticate = authenticate

    def route(self, method: str, template: str, *, summary: str, public: bool = False) -> Callable[[Handler], Handler]:
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, template, handler, public, summary, pattern))
            return handler

        return register

    def resolve(self, event: dict[str, Any]) -> dict[str, Any]:
        try:
            request = Request.from_event(event)
        except ValueError:  # API Gateway only sends valid base64; anything else is not a request we can read
            unreadable = InvalidRequest("The request body could not be decoded.", field="body", rule="body_encoding")
            return Response(unreadable.status, unreadable.body()).to_event()
        try:
            return self._dispatch(request).to_event()
        except DarkroomError as exc:
            return Response(exc.status, exc.body(), exc.headers()).to_event()
        except Exception as exc:
            # A dependency that failed may work on a retry (503); a request AWS found invalid will not, and since
            # every input is validated first, it is darkroom's own bug (500), never something to retry forever.
            if aws.is_aws_error(exc) and aws.error_code(exc) != "ValidationException":
                logger.exception("AWS call failed", extra={"path": request.path})
                error = ServiceUnavailable("darkroom could not reach its storage; try again shortly.")
                return Response(error.status, error.body(), {"retry-after": "1"}).to_event()
            logger.exception("unhandled error", extra={"path": request.path})
            internal = DarkroomError(f"Internal error (request {request.request_id}).")
            return Response(internal.status, internal.body()).to_event()

    def _dispatch(self, request: Request) -> Response:
        allowed = []
        for route in self.routes:
            match = route.pattern.match(request.path)
            if not match:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            request.path_params = match.groupdict()
            if not route.public:
                request.tenant = self._authenticate(request)
            return route.handler(request)
        if allowed:
            refused = MethodNotAllowed(f"Use {', '.join(allowed)} on {request.path}.")
            return Response(refused.status, refused.body(), {"allow": ", ".join(allowed)})
        raise NotFound(f"No route {request.method} {request.path}.")
