"""The official openai SDK against `darkroom emulator` run as its own process: everything it answers must parse."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from darkroom_local.stack import free_port

pytestmark = pytest.mark.e2e


def start_emulator(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    script = Path(sys.executable).parent / "darkroom"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "darkroom_local.cli"]
    process = subprocess.Popen(
        [*command, "emulator", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("darkroom emulator did not start")


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    process, url = start_emulator({})
    yield url
    process.terminate()
    assert process.wait(timeout=10) == 0


@pytest.fixture
def sdk(emulator_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="sk-anything", max_retries=0)


def decode(b64: str | None) -> Image.Image:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_parses_with_images_and_usage(sdk: openai.OpenAI) -> None:
    result = sdk.images.generate(
        model="gpt-image-2",
        prompt="a fox",
        size="1536x1024",
        output_format="webp",
        output_compression=60,
        n=2,
        quality="high",
    )
    assert result.data and len(result.data) == 2
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert result.usage and result.usage.output_tokens > 0 and result.usage.input_tokens_details
    assert result.size == "1536x1024" and result.output_format == "webp" and result.quality == "high"


def test_custom_size_jpeg_and_transparent_png(sdk: openai.OpenAI) -> None:
    jpeg = sdk.images.generate(model="gpt-image-2", prompt="wide", size="2048x1152", output_format="jpeg")
    assert decode(jpeg.data[0].b64_json).size == (2048, 1152)  # type: ignore[index]
    png = sdk.images.generate(model="gpt-image-1.5", prompt="sticker", background="transparent")
    image = decode(png.data[0].b64_json)  # type: ignore[index]
    assert image.mode == "RGBA" and png.background == "transparent"


def test_edit_takes_multipart_images(sdk: openai.OpenAI) -> None:
    source = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 10, 10)).save(source, "PNG")
    source.seek(0)
    result = sdk.images.edit(model="gpt-image-2", image=("in.png", source, "image/png"), prompt="make it blue")
    image = decode(result.data[0].b64_json)  # type: ignore[index]
    assert image.size == (640, 480)
    assert result.usage and result.usage.input_tokens_details.image_tokens > 0


def test_refusal_is_the_sdks_bad_request_with_moderation_code(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-2", prompt="[refuse] please")
    assert caught.value.code == "moderation_blocked"


def test_moderations_parse_and_flag_what_tests_ask_for(sdk: openai.OpenAI) -> None:
    red = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(red, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(red.getvalue()).decode()
    parts: list[Any] = [
        {"type": "text", "text": "a quiet lake [flag:hate]"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    result = sdk.moderations.create(model="omni-moderation-latest", input=parts)
    (verdict,) = result.results
    assert verdict.flagged and verdict.categories.hate and verdict.categories.violence_graphic
    assert not verdict.categories.sexual
    assert verdict.category_applied_input_types.violence_graphic == ["image"]
    clean = sdk.moderations.create(model="omni-moderation-latest", input=["a quiet lake", "a calm sea"])
    assert [r.flagged for r in clean.results] == [False, False]


def test_missing_prompt_is_a_bad_request_naming_the_param(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-2", prompt="")
    assert caught.value.param == "prompt"


@pytest.mark.parametrize(
    ("refused", "param"),
    [
        pytest.param({"style": "vivid"}, "style", id="legacy-style"),
        pytest.param({"quality": "hd"}, "quality", id="dall-e-quality"),
        pytest.param({"size": "1000x1000"}, "size", id="size-not-multiple-of-16"),
        pytest.param({"extra_body": {"seed": 7}}, "seed", id="unknown-parameter"),
    ],
)
def test_a_refused_parameter_is_the_sdks_bad_request_naming_it(
    sdk: openai.OpenAI, refused: dict[str, Any], param: str
) -> None:
    # Given a request with one parameter OpenAI refuses for gpt-image-2
    # When the SDK sends it
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-2", prompt="a fox", **refused)
    # Then the SDK raises its 400 error with that parameter named
    assert caught.value.param == param


def test_a_retired_model_is_the_sdks_not_found_error(sdk: openai.OpenAI) -> None:
    # Given a model OpenAI no longer serves
    # When the SDK asks it for an image
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.images.generate(model="dall-e-3", prompt="a fox")
    # Then the SDK raises its 404 error with OpenAI's code
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_faults_parse_as_the_sdks_errors() -> None:
    process, url = start_emulator({"DARKROOM_EMULATOR_FAULT_RATE": "1", "DARKROOM_EMULATOR_HANG_MS": "3000"})
    try:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", max_retries=0, timeout=0.5)
        seen: set[str] = set()
        for _ in range(40):
            try:
                sdk.images.generate(model="gpt-image-2", prompt="x")
            except openai.RateLimitError as exc:
                assert exc.response.headers["retry-after"]
                seen.add("rate_limit")
            except openai.InternalServerError:
                seen.add("server_error")
            except openai.APITimeoutError:
                seen.add("hang")
            if len(seen) == 3:
                break
        assert seen == {"rate_limit", "server_error", "hang"}
    finally:
        process.terminate()
        process.wait(timeout=10)
