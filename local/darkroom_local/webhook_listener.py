"""`darkroom webhooks listen`: a receiver for developers trying darkroom's webhooks on their own machine.

It verifies each delivery as a subscriber should (Standard Webhooks: signature with the given secret, timestamp
within five minutes), prints what arrived, and answers 204, or 401 to a delivery that does not verify, so a wrong
secret shows up as retries in `GET /v1/jobs/{id}/deliveries`.
"""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable
from typing import Any

from darkroom.webhooks.signing import SignatureInvalid, verify

MAX_BODY = 1024 * 1024


class WebhookListener(http.server.ThreadingHTTPServer):
    def __init__(self, port: int, secret: str, show: Callable[[str], None] = print, host: str = "127.0.0.1") -> None:
        self.secret, self.show = secret, show
        self.received: list[dict[str, Any]] = []
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: WebhookListener

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        body = self.rfile.read(length)
        try:
            verify(self.server.secret, dict(self.headers), body)
            event = json.loads(body)
        except (SignatureInvalid, ValueError) as exc:
            self.server.show(f"REFUSED {self.headers.get('webhook-id', '?')}: {exc}")
            self._answer(401)
            return
        self.server.received.append(event)
        data = event.get("data", {})
        outputs = ", ".join(f"{o.get('width')}x{o.get('height')} {o.get('format')}" for o in data.get("outputs", []))
        error = (data.get("error") or {}).get("code")
        self.server.show(
            f"{event.get('type')} {data.get('id')} ({self.headers['webhook-id']})"
            + (f": {outputs}" if outputs else "")
            + (f": {error}" if error else "")
        )
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
