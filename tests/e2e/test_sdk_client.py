"""The official openai SDK pointed at darkroom's local stack, as a frontend would use it: `Prefer: wait` makes
`images.generate` and `images.edit` answer as OpenAI does."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from darkroom_local.stack import LocalStack
from tests.e2e.served import served_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack() as stack:
        yield stack


def sdk(stack: LocalStack, wait_s: int = 20, **options: object) -> openai.OpenAI:
    """What the README tells a frontend to write; `max_retries` left at the SDK's default."""
    return openai.OpenAI(
        base_url=f"{stack.api_url}/v1",
        api_key=stack.api_keys["dev"],
        default_headers={"Prefer": f"wait={wait_s}"},
        **options,  # type: ignore[arg-type]
    )


def decode(b64: str | None) -> Image.Image:
    assert b64, "no b64_json"
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def png(size: tuple[int, int], color: tuple[int, ...], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_generate_two_images_as_with_openai(running: LocalStack) -> None:
    result = sdk(running).images.generate(
        model="gpt-image-2", prompt="two lighthouses", n=2, size="1536x1024", quality="low", output_format="webp"
    )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        image = decode(item.b64_json)
        assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert (result.size, result.quality, result.output_format) == ("1536x1024", "low", "webp")
    assert result.usage is not None and result.usage.output_tokens > 0


def test_edit_with_a_mask(running: LocalStack) -> None:
    # A mask whose right half is transparent: the emulator tints only what the mask opens
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (128, 0, 256, 256))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    result = sdk(running).images.edit(
        model="gpt-image-1.5",
        image=("photo.png", png((256, 256), (0, 128, 0)), "image/png"),
        mask=("mask.png", buffer.getvalue(), "image/png"),
        prompt="paint the right half",
        size="auto",
    )
    assert result.data is not None
    image = decode(result.data[0].b64_json).convert("RGB")
    assert image.size == (256, 256)
    left, right = image.getpixel((10, 128)), image.getpixel((240, 128))
    assert left != right, "the mask did not reach the provider"


def test_a_refusal_raises_the_sdks_own_error(running: LocalStack) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(running).images.generate(prompt="[refuse] something forbidden")
    assert raised.value.code == "moderation_blocked" and raised.value.status_code == 400
    assert raised.value.response.headers["darkroom-job-id"].startswith("job_")


def test_a_bad_request_names_its_field(running: LocalStack) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        sdk(running).images.generate(prompt="a cat", size="1000x1000")
    assert raised.value.param == "size"


def test_a_slow_job_answers_202_with_its_location(running: LocalStack) -> None:
    assert running.emulator is not None
    running.emulator.config.latency_ms = 3000
    try:
        raw = sdk(running, wait_s=1).images.with_raw_response.generate(prompt="a slow sunrise")
    finally:
        running.emulator.config.latency_ms = 0
    assert raw.status_code == 202
    job_id = raw.headers["darkroom-job-id"]
    assert raw.headers["location"] == f"/v1/jobs/{job_id}"
    assert raw.headers["preference-applied"] == "wait=1"
    job = raw.http_response.json()
    assert job["status"] in ("queued", "running") and job["urls"]["get"] == f"{running.api_url}/v1/jobs/{job_id}"
