"""Server-sent events (the WHATWG event-stream format) read from chunks as they arrive over the network.

Chunks split anywhere: inside a line, between the CR and LF of one line end, inside a UTF-8 character. An image
event's data line is megabytes of base64, so each chunk is scanned once (no rescanning of what is buffered) and an
event larger than `max_event_bytes` is refused rather than held. `finish()` tells a stream that ended between
events from one cut in the middle of one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"[\r\n]")


class EventStreamError(ValueError):
    """The stream broke the format's limits or ended inside an event."""


@dataclass(frozen=True)
class ServerSentEvent:
    event: str  # "message" when the stream named none
    data: str
    id: str | None = None


class EventStreamDecoder:
    def __init__(self, max_event_bytes: int) -> None:
        self._max_event_bytes = max_event_bytes
        self._line = bytearray()
        self._scanned = 0  # how much of _line is known to hold no line end
        self._after_cr = False  # the last chunk ended with CR: an LF first in the next one belongs to it
        self._event = ""
        self._data: list[str] = []
        self._data_bytes = 0
        self._id: str | None = None
        self._started = False  # a field of the event under way was read

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by this chunk, in order."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        self._line += chunk
        events: list[ServerSentEvent] = []
        start = 0
        while True:
            end = _line_end(self._line, max(start, self._scanned))
            if end < 0:
                break
            terminator = 2 if self._line[end : end + 2] == b"\r\n" else 1
            if self._line[end : end + 1] == b"\r" and end + 1 == len(self._line):
                self._after_cr = True  # its LF, if any, is in the next chunk
            event = self._read_line(bytes(self._line[start:end]))
            if event is not None:
                events.append(event)
            start = end + terminator
        del self._line[:start]
        self._scanned = len(self._line)
        if self._data_bytes + len(self._line) > self._max_event_bytes:
            raise EventStreamError(f"an event is larger than {self._max_event_bytes} bytes")
        return events

    def finish(self) -> None:
        """The stream has ended: EventStreamError if it ended inside an event (an incomplete one is never
        dispatched, as the format says)."""
        if self._line or self._started:
            raise EventStreamError("the stream ended in the middle of an event")

    def _read_line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            raise EventStreamError("an event's line is not UTF-8") from None
        if line.startswith(":"):
            return None  # a comment, often a keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event, self._started = value, True
        elif name == "data":
            self._data.append(value)
            self._data_bytes += len(raw)
            self._started = True
        elif name == "id" and "\0" not in value:
            self._id, self._started = value, True
        return None  # `retry` and unknown fields are ignored

    def _dispatch(self) -> ServerSentEvent | None:
        # The format dispatches only events with data; a name alone is dropped.
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id) if self._data else None
        self._event, self._data, self._data_bytes, self._started = "", [], 0, False
        return event


def _line_end(buffer: bytearray, start: int) -> int:
    """The index of the first CR or LF at or after `start`, or -1: one pass, stopping at the first."""
    found = _LINE_END.search(buffer, start)
    return found.start() if found else -1
