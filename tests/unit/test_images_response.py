"""Reading OpenAI's ImagesResponse as a stream: every split of the body reads the same, and memory stays one copy."""

from __future__ import annotations

import base64
import json
import os
import random
import tracemalloc

import pytest

from darkroom.errors import ProviderBadResponse
from darkroom.providers.images_response import read_images_response

USAGE = {"input_tokens": 5, "output_tokens": 100, "total_tokens": 105}


def body(images: list[bytes], **extra: object) -> bytes:
    data = [{"b64_json": base64.b64encode(image).decode(), "revised_prompt": f"r{i}"} for i, image in enumerate(images)]
    return json.dumps({"created": 1, "data": data, "usage": USAGE, **extra}).encode()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 64, 1 << 20])
def test_any_chunking_gives_the_same_images_usage_and_prompts(size: int) -> None:
    # Given an answer of three images of awkward lengths, cut into chunks of `size` bytes
    images = [os.urandom(n) for n in (1, 100, 1001)]
    # When it is read chunk by chunk
    result = read_images_response(chunks(body(images), size), max_images=3)
    # Then every image, the usage and the revised prompts come out exactly
    assert result.images == images
    assert result.usage == USAGE and result.revised_prompts == ["r0", "r1", "r2"]


def test_escaped_slashes_and_white_space_around_the_key_are_read() -> None:
    image = bytes(range(256)) * 3  # its base64 has many '/'
    encoded = base64.b64encode(image).decode().replace("/", "\\/")
    raw = ('{"data": [ { "b64_json"  :\n "' + encoded + '" } ], "usage": {}}').encode()
    for size in (1, 3, 17):
        assert read_images_response(chunks(raw, size)).images == [image]


def test_the_words_b64_json_inside_other_text_are_not_taken_for_an_image() -> None:
    raw = body([b"img"], note='a "b64_json" mention', kind="b64_json")
    result = read_images_response(chunks(raw, 4))
    assert result.images == [b"img"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"data": []}',
        b'{"nothing": 1}',
        b'{"data": [{"b64_json": "%%%%"}]}',
        b'{"data": [{"b64_json": "abc"}]}',  # not a whole base64 quantum
        b'{"data": [{"b64_json": null}]}',
        b'{"data": [{"b64_json": "\\u0041AAA"}]}',
        b'{"data": [{"b64_json": "AAAA',  # cut inside an image
        b'{"data": [{"b64_json": ""}]}',
        b'{"data": {"b64_json": "AAAA"}}',
    ],
)
def test_unreadable_answers_are_bad_responses(raw: bytes) -> None:
    with pytest.raises(ProviderBadResponse):
        read_images_response(chunks(raw, 3))


def test_more_images_than_asked_for_is_a_bad_response() -> None:
    with pytest.raises(ProviderBadResponse, match="more images"):
        read_images_response([body([b"a", b"b"])], max_images=1)


def test_memory_holds_the_decoded_images_once_not_the_encoded_answer() -> None:
    # Given an 8 MiB answer of four 1.5 MiB images, streamed in 64 KiB chunks
    rng = random.Random(7)
    images = [rng.randbytes(1_500_000) for _ in range(4)]
    raw = body(images)
    parts = chunks(raw, 65536)
    del raw
    decoded = sum(len(image) for image in images)
    # When it is read under tracemalloc
    tracemalloc.start()
    result = read_images_response(parts, max_images=4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then the peak stays near one copy of the images (whole-body parsing needed over three)
    assert result.images == images
    assert peak < 1.5 * decoded, f"peak {peak / 1e6:.1f} MB for {decoded / 1e6:.1f} MB of images"


def test_an_answer_with_more_image_bytes_than_any_request_can_produce_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a total cap of 2 KB / When three 1 KB images arrive / Then the third is refused before it is kept
    from darkroom.providers import images_response

    monkeypatch.setattr(images_response, "MAX_ANSWER_IMAGE_BYTES", 2048)
    with pytest.raises(ProviderBadResponse, match="more image bytes"):
        read_images_response(chunks(body([b"a" * 1024, b"b" * 1024, b"c" * 1024]), 100))


def test_usage_keeps_only_documented_whole_token_counts() -> None:
    # Given a usage block with non-finite numbers, text, and half a megabyte of extra fields
    raw = (
        b'{"data": [{"b64_json": "aW1n"}], "usage": {"input_tokens": NaN, "output_tokens": 1e999, '
        b'"total_tokens": 12, "input_tokens_details": {"text_tokens": 3, "image_tokens": "9"}, '
        b'"output_tokens_details": {"image_tokens": true}, "note": "' + b"x" * 500_000 + b'"}}'
    )
    # When it is read / Then what is stored is small, valid JSON of whole counts
    usage = read_images_response([raw]).usage
    assert usage == {"total_tokens": 12, "input_tokens_details": {"text_tokens": 3}}
    json.dumps(usage, allow_nan=False)
