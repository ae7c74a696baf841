"""Server-sent events read from chunks split anywhere (darkroom.providers.sse)."""

from __future__ import annotations

import json
import random

import pytest

from darkroom.providers.sse import EventStreamDecoder, EventStreamError, ServerSentEvent

STREAM = (
    b": keep-alive\r\n"
    b"event: image_generation.partial_image\r\n"
    b'data: {"type": "image_generation.partial_image", "partial_image_index": 0, "b64_json": "QUJD"}\r\n'
    b"\r\n"
    b"event: image_generation.partial_image\n"
    b'data: {"type": "image_generation.partial_image",\n'
    b'data:  "partial_image_index": 1, "b64_json": "REVG", "note": "caf\xc3\xa9"}\n'
    b"\n"
    b"retry: 1000\r"
    b"id: 7\r"
    b"event:image_generation.completed\r"
    b'data:{"type": "image_generation.completed", "b64_json": "R0hJ"}\r'
    b"\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ServerSentEvent(
        "image_generation.partial_image",
        '{"type": "image_generation.partial_image", "partial_image_index": 0, "b64_json": "QUJD"}',
    ),
    ServerSentEvent(
        "image_generation.partial_image",
        '{"type": "image_generation.partial_image",\n "partial_image_index": 1, "b64_json": "REVG", "note": "café"}',
    ),
    ServerSentEvent("image_generation.completed", '{"type": "image_generation.completed", "b64_json": "R0hJ"}', "7"),
    ServerSentEvent("message", "[DONE]", "7"),
]


def decode(chunks: list[bytes], max_event_bytes: int = 1 << 20) -> list[ServerSentEvent]:
    decoder = EventStreamDecoder(max_event_bytes)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    decoder.finish()
    return events


def test_a_whole_stream_gives_its_events_with_every_line_ending() -> None:
    assert decode([STREAM]) == EXPECTED


def test_a_stream_split_at_every_byte_gives_the_same_events() -> None:
    # CR and LF of one line end, a UTF-8 character and a field name all split across chunks
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_split_at_random_places_gives_the_same_events(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 30)))
    chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert decode(chunks) == EXPECTED, f"seed {seed}, cuts {cuts}"


def test_json_data_of_each_event_parses() -> None:
    assert [json.loads(event.data)["type"] for event in EXPECTED[:3]] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]


@pytest.mark.parametrize("cut", [b"event: image_generation.completed\n", b'data: {"type": "image_gen', b"data: x\n"])
def test_a_stream_cut_inside_an_event_is_an_error_and_the_event_is_never_given(cut: bytes) -> None:
    decoder = EventStreamDecoder(1 << 20)
    assert decoder.feed(b"data: first\n\n" + cut) == [ServerSentEvent("message", "first")]
    with pytest.raises(EventStreamError, match="middle of an event"):
        decoder.finish()


def test_an_error_event_is_given_like_any_other() -> None:
    error = b'event: error\ndata: {"type": "error", "error": {"code": "moderation_blocked", "message": "no"}}\n\n'
    [event] = decode([error])
    assert event.event == "error" and json.loads(event.data)["error"]["code"] == "moderation_blocked"


def test_an_event_larger_than_allowed_is_refused_before_it_is_held_whole() -> None:
    decoder = EventStreamDecoder(max_event_bytes=1000)
    decoder.feed(b"data: " + b"A" * 600 + b"\n")
    with pytest.raises(EventStreamError, match="larger than 1000"):
        decoder.feed(b"data: " + b"A" * 500)  # the line is not even complete yet


def test_a_name_without_data_is_not_an_event_and_not_utf8_is_an_error() -> None:
    assert decode([b"event: ping\n\n: comment\n\n"]) == []
    with pytest.raises(EventStreamError, match="UTF-8"):
        EventStreamDecoder(1000).feed(b"data: \xff\n")
