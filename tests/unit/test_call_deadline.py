"""The deadline layer under httpx: every read and write of a call gets at most the call's remaining time, and the
pool keeps httpx's own limits (an idle connection is not reused past its keep-alive)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpcore
import httpx
import pytest

from darkroom.providers import deadline


class SlowWrites:
    """A stream whose every write takes 0.1 s, like a server that reads slowly but steadily."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        time.sleep(0.1)
        self.written += len(buffer)


def test_a_large_write_is_bounded_as_a_whole_not_per_send() -> None:
    # Given a 1 MiB body (16 pieces of 0.1 s each) and a 0.35 s deadline
    inner = SlowWrites()
    stream = deadline._Stream(inner)  # type: ignore[arg-type]
    started = time.monotonic()
    # When it is written / Then the write stops at the deadline, not after all 1.6 s
    with deadline.within(0.35), pytest.raises(httpcore.WriteTimeout):
        stream.write(b"x" * (1 << 20), timeout=5)
    assert time.monotonic() - started < 0.6 and inner.written < (1 << 20)


def test_nothing_to_write_never_times_out_a_request_already_sent() -> None:
    stream = deadline._Stream(SlowWrites())  # type: ignore[arg-type]
    with deadline.within(0):
        stream.write(b"", timeout=5)  # h11's end of message after a body sent whole


def test_the_deadline_ends_with_its_block_even_on_error() -> None:
    with pytest.raises(RuntimeError), deadline.within(0):
        raise RuntimeError("boom")
    assert deadline._left(5, httpcore.ReadTimeout) == 5


def test_an_idle_connection_is_not_reused_past_its_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a server that counts the connections it is opened, and a keep-alive of 0.3 s
    monkeypatch.setattr(deadline, "_KEEPALIVE_EXPIRY_S", 0.3)
    server = socket.create_server(("127.0.0.1", 0))
    opened: list[Any] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            opened.append(connection)
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    def answer(connection: socket.socket) -> None:
        while connection.recv(65536):
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"
    try:
        with httpx.Client(transport=deadline.transport()) as client:
            # When two calls follow each other at once, then a third after the keep-alive has passed
            client.get(url)
            client.get(url)
            time.sleep(0.6)
            client.get(url)
    finally:
        server.close()
    # Then the second reused the first's connection and the third opened a new one
    assert len(opened) == 2
