"""The official openai SDK's image streaming against `darkroom emulator`: every event it sends must parse."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image, ImageChops, ImageStat

from tests.e2e.test_emulator_sdk import start_emulator

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sdk() -> Iterator[openai.OpenAI]:
    process, url = start_emulator({"DARKROOM_EMULATOR_LATENCY_MS": "300"})
    yield openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0)
    process.terminate()
    assert process.wait(timeout=10) == 0


def image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def distance(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean)


def test_a_streamed_generation_sends_previews_that_sharpen_then_the_final_image(sdk: openai.OpenAI) -> None:
    # When the SDK streams a generation with two previews
    events = list(
        sdk.images.generate(model="gpt-image-2", prompt="a lighthouse", size="1024x1024", stream=True, partial_images=2)
    )

    # Then it parses two partial images, in order, then the completed event
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    first, second, completed = events
    assert first.type == "image_generation.partial_image" and second.type == "image_generation.partial_image"
    assert [first.partial_image_index, second.partial_image_index] == [0, 1]
    assert completed.type == "image_generation.completed"
    final = image(completed.b64_json)
    assert final.size == (1024, 1024) and completed.size == "1024x1024" and completed.output_format == "png"
    # each preview is nearer the final image than the one before
    assert distance(image(second.b64_json), final) < distance(image(first.b64_json), final)
    # and the usage bills the previews on top of the image, as OpenAI does
    plain = sdk.images.generate(model="gpt-image-2", prompt="a lighthouse", size="1024x1024")
    assert plain.usage is not None
    assert completed.usage.output_tokens == plain.usage.output_tokens + 200


def test_a_streamed_edit_sends_edit_events(sdk: openai.OpenAI) -> None:
    source = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 200, 10)).save(source, "PNG")
    source.seek(0)
    events = list(
        sdk.images.edit(
            model="gpt-image-2",
            image=("in.png", source, "image/png"),
            prompt="make it blue",
            stream=True,
            partial_images=1,
            output_format="webp",
        )
    )
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    completed = events[-1]
    assert completed.type == "image_edit.completed"
    assert Image.open(io.BytesIO(base64.b64decode(completed.b64_json))).format == "WEBP"
    assert completed.usage.input_tokens_details.image_tokens > 0


def test_partial_images_without_a_stream_is_the_sdks_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-2", prompt="p", extra_body={"partial_images": 2})
    assert caught.value.param == "partial_images"
