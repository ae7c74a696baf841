"""An HTTP server on a daemon thread of this process, for the emulator and the local API front."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _OwnedServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung request (the emulator's hang fault) must never block shutdown
    owner: object

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (one that gave up on a hang, stopped reading a file, or closes a
        kept-alive connection) is everyday traffic here, not a traceback on the console."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class BackgroundHTTPServer:
    """Subclasses set `handler`; a request handler reaches the subclass instance as `self.server.owner`."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "http"

    def __init__(self) -> None:
        self._server: _OwnedServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = _OwnedServer((host, port), self.handler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
