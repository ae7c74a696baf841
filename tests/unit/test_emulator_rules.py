"""The emulator refuses what OpenAI refuses, judged from darkroom's model table, and a refusal never bills."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from darkroom import catalog
from darkroom_local.emulator import Emulator, EmulatorConfig

PROMPT = "a lighthouse at dusk"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# (body without the prompt, status, code, param, a piece of the message that names the rule)
GENERATION_REFUSALS = [
    pytest.param({"model": "gpt-image-9"}, 404, "model_not_found", "model", "gpt-image-9", id="unknown-model"),
    *(
        pytest.param({"model": name}, 404, "model_not_found", "model", name, id=f"retired-{name}")
        for name in catalog.RETIRED_MODELS
    ),
    pytest.param({"size": "1000x1000"}, 400, "invalid_value", "size", "multiples of 16", id="size-not-16"),
    pytest.param({"size": "3856x1296"}, 400, "invalid_value", "size", "longer side", id="size-long-edge"),
    pytest.param({"size": "3072x1008"}, 400, "invalid_value", "size", "aspect ratio", id="size-aspect"),
    pytest.param({"size": "768x768"}, 400, "invalid_value", "size", "pixel count", id="size-too-few-pixels"),
    pytest.param({"size": "3840x2176"}, 400, "invalid_value", "size", "pixel count", id="size-too-many-pixels"),
    pytest.param({"size": "1024X1024"}, 400, "invalid_value", "size", "WIDTHxHEIGHT", id="size-shape"),
    pytest.param({"size": 1024}, 400, "invalid_type", "size", "expected a string", id="size-type"),
    pytest.param(
        {"model": "gpt-image-1.5", "size": "2048x1152"}, 400, "invalid_value", "size", "1536x1024", id="size-fixed"
    ),
    pytest.param({"quality": "hd"}, 400, "invalid_value", "quality", "'hd'", id="quality-hd"),
    pytest.param({"quality": "standard"}, 400, "invalid_value", "quality", "'standard'", id="quality-standard"),
    pytest.param({"quality": "xhigh"}, 400, "invalid_value", "quality", "'xhigh'", id="quality-not-this-model"),
    pytest.param({"output_format": "gif"}, 400, "invalid_value", "output_format", "'gif'", id="format-gif"),
    pytest.param(
        {"model": "gpt-image-1.5", "background": "transparent", "output_format": "jpeg"},
        400,
        "invalid_value",
        "background",
        "jpeg",
        id="transparent-jpeg",
    ),
    pytest.param(
        {"model": "gpt-image-2", "background": "transparent"},
        400,
        "invalid_value",
        "background",
        "gpt-image-2",
        id="transparent-not-this-model",
    ),
    pytest.param({"background": "clear"}, 400, "invalid_value", "background", "'clear'", id="background-value"),
    pytest.param({"output_compression": 50}, 400, "invalid_value", "output_compression", "jpeg", id="compression-png"),
    pytest.param(
        {"output_format": "jpeg", "output_compression": 101},
        400,
        "integer_above_max_value",
        "output_compression",
        "<= 100",
        id="compression-above-100",
    ),
    pytest.param(
        {"output_format": "webp", "output_compression": -1},
        400,
        "integer_below_min_value",
        "output_compression",
        ">= 0",
        id="compression-below-0",
    ),
    pytest.param({"n": 0}, 400, "integer_below_min_value", "n", ">= 1", id="n-0"),
    pytest.param({"n": 11}, 400, "integer_above_max_value", "n", "<= 10", id="n-11"),
    pytest.param({"n": "2"}, 400, "invalid_type", "n", "expected an integer", id="n-text"),
    pytest.param({"n": True}, 400, "invalid_type", "n", "expected an integer", id="n-boolean"),
    pytest.param({"moderation": "high"}, 400, "invalid_value", "moderation", "'high'", id="moderation"),
    pytest.param({"complexity": "extreme"}, 400, "invalid_value", "complexity", "'extreme'", id="complexity"),
    pytest.param(
        {"response_format": "url"}, 400, "unsupported_parameter", "response_format", "'response_format'", id="legacy-rf"
    ),
    pytest.param({"style": "vivid"}, 400, "unsupported_parameter", "style", "'style'", id="legacy-style"),
    pytest.param({"stream": "yes"}, 400, "invalid_type", "stream", "expected a boolean", id="stream-text"),
    pytest.param(
        {"partial_images": 2}, 400, "invalid_value", "partial_images", "only supported when stream", id="partials-alone"
    ),
    pytest.param(
        {"stream": True, "partial_images": 4},
        400,
        "integer_above_max_value",
        "partial_images",
        "<= 3",
        id="partials-4",
    ),
    pytest.param({"stream": True, "n": 2}, 400, "invalid_value", "n", "n must be 1", id="stream-n-2"),
    pytest.param({"seed": 7}, 400, "unknown_parameter", "seed", "Unknown parameter: 'seed'.", id="unknown-param"),
    pytest.param(
        {"webhook_url": "https://example.com/hook"},
        400,
        "unknown_parameter",
        "webhook_url",
        "Unknown parameter: 'webhook_url'.",
        id="darkroom-field-leaked",
    ),
]


@pytest.mark.parametrize(("fields", "status", "code", "param", "says"), GENERATION_REFUSALS)
def test_a_generation_openai_would_refuse_is_refused_and_not_generated(
    emulator: Emulator, client: httpx.Client, fields: dict[str, Any], status: int, code: str, param: str, says: str
) -> None:
    # Given a request that breaks exactly one of OpenAI's rules
    body = {"prompt": PROMPT, "model": "gpt-image-2", **fields}
    # When it is sent
    response = client.post("/v1/images/generations", json=body)
    # Then it is refused in OpenAI's shape, naming the parameter, and nothing was generated
    error = error_of(response)
    assert (response.status_code, error["code"], error["param"]) == (status, code, param)
    assert says in error["message"]
    assert emulator.calls()["totals"] == {"requests": 1, "generations": 0, "submissions": 0, "batched": 0}
    assert emulator.stats.as_dict()["calls"] == 0


@pytest.mark.parametrize(
    ("prompt", "code", "says"),
    [
        pytest.param(None, "missing_required_parameter", "Missing required parameter: 'prompt'.", id="missing"),
        pytest.param("", "empty_string", "empty string", id="empty"),
        pytest.param("x" * 32_001, "string_above_max_length", "32000", id="too-long"),
        pytest.param(42, "invalid_type", "expected a string", id="not-text"),
    ],
)
def test_a_prompt_openai_would_refuse_is_refused_and_not_generated(
    emulator: Emulator, client: httpx.Client, prompt: Any, code: str, says: str
) -> None:
    # Given a request whose prompt is missing, empty, too long or not text
    body = {"model": "gpt-image-2"} if prompt is None else {"model": "gpt-image-2", "prompt": prompt}
    # When it is sent
    response = client.post("/v1/images/generations", json=body)
    # Then it is a 400 naming the prompt, and nothing was generated
    error = error_of(response)
    assert (response.status_code, error["code"], error["param"]) == (400, code, "prompt")
    assert says in error["message"]
    assert emulator.calls()["totals"]["generations"] == 0


def test_a_prompt_of_exactly_the_limit_is_accepted(emulator: Emulator, client: httpx.Client) -> None:
    # Given a prompt of 32,000 characters
    prompt = "y" * 32_000
    # When it is sent
    response = client.post("/v1/images/generations", json={"prompt": prompt, "quality": "low"})
    # Then it is generated
    assert response.status_code == 200, response.text
    assert emulator.generations_for(prompt) == 1


@pytest.mark.parametrize("model", sorted(catalog.MODELS))
def test_every_model_in_the_table_accepts_a_standard_request(
    emulator: Emulator, client: httpx.Client, model: str
) -> None:
    # Given a plain request for one of darkroom's models
    body = {"prompt": PROMPT, "model": model, "size": "1024x1024", "quality": "low", "output_format": "jpeg"}
    # When it is sent
    response = client.post("/v1/images/generations", json=body)
    # Then one image comes back and one generation is counted
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1 and response.json()["size"] == "1024x1024"
    assert emulator.generations_for(PROMPT) == 1


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"model": "gpt-image-2", "size": "2400x800"}, id="exactly-3-to-1"),
        pytest.param({"model": "gpt-image-2", "size": "1024x640"}, id="fewest-pixels"),
        pytest.param({"model": "gpt-image-2", "size": "3840x2160"}, id="most-pixels"),
        pytest.param({"model": "gpt-image-1-mini", "size": "auto"}, id="auto-on-fixed-sizes"),
        pytest.param({"model": "gpt-image-1.5", "size": "1024x1536"}, id="standard-on-fixed-sizes"),
        pytest.param({"model": "gpt-image-2.5-flare", "quality": "xhigh"}, id="extended-quality"),
        pytest.param({"model": "gpt-image-1.5", "output_compression": 0}, id="compression-0"),
        pytest.param({"model": "gpt-image-2", "stream": False}, id="stream-false"),
        pytest.param(
            {"model": "gpt-image-2", "moderation": "low", "complexity": "high", "safety_identifier": "u1", "user": "u"},
            id="every-optional-field",
        ),
    ],
)
def test_requests_at_the_edge_of_the_rules_are_accepted(
    emulator: Emulator, client: httpx.Client, fields: dict[str, Any]
) -> None:
    # Given a request that sits on a limit but inside it
    body = {"prompt": PROMPT, "quality": "low", "output_format": "jpeg", **fields}
    # When it is sent
    response = client.post("/v1/images/generations", json=body)
    # Then it is generated
    assert response.status_code == 200, response.text
    assert emulator.generations_for(PROMPT) == 1


def test_a_transparent_webp_from_a_model_that_offers_it_is_accepted(emulator: Emulator, client: httpx.Client) -> None:
    # Given a transparent background as webp on a 2.5 model
    body = {"prompt": PROMPT, "model": "gpt-image-2.5-sunburst", "background": "transparent", "output_format": "webp"}
    # When it is sent
    response = client.post("/v1/images/generations", json=body)
    # Then the answer says it is transparent
    assert response.status_code == 200, response.text
    assert response.json()["background"] == "transparent"


def test_a_content_policy_refusal_is_moderation_blocked_and_not_generated(
    emulator: Emulator, client: httpx.Client
) -> None:
    # Given a prompt the safety system refuses
    prompt = "[refuse] something"
    # When it is sent
    response = client.post("/v1/images/generations", json={"prompt": prompt, "model": "gpt-image-2"})
    # Then it is OpenAI's content-policy refusal, and nothing was generated
    assert (response.status_code, error_of(response)["code"]) == (400, "moderation_blocked")
    assert emulator.calls()["prompts"][prompt] == {
        "requests": 1,
        "generations": 0,
        "submissions": 0,
        "batched": 0,
        "edits": [],
    }


# (form fields besides prompt and image, code, param)
EDIT_REFUSALS = [
    pytest.param({"model": "dall-e-2"}, 404, "model_not_found", "model", id="retired-model"),
    pytest.param({"model": "nope"}, 404, "model_not_found", "model", id="unknown-model"),
    pytest.param({"size": "1000x1000"}, 400, "invalid_value", "size", id="size"),
    pytest.param({"quality": "hd"}, 400, "invalid_value", "quality", id="quality"),
    pytest.param({"output_format": "bmp"}, 400, "invalid_value", "output_format", id="format"),
    pytest.param({"output_compression": "50"}, 400, "invalid_value", "output_compression", id="compression-png"),
    pytest.param({"n": "0"}, 400, "integer_below_min_value", "n", id="n-0"),
    pytest.param({"n": "two"}, 400, "invalid_type", "n", id="n-text"),
    pytest.param({"background": "transparent"}, 400, "invalid_value", "background", id="transparent-gpt-image-2"),
    pytest.param({"response_format": "b64_json"}, 400, "unsupported_parameter", "response_format", id="legacy"),
    pytest.param({"stream": "maybe"}, 400, "invalid_type", "stream", id="stream-text"),
    pytest.param({"partial_images": "2"}, 400, "invalid_value", "partial_images", id="partials-without-stream"),
    pytest.param({"seed": "7"}, 400, "unknown_parameter", "seed", id="unknown-param"),
]


@pytest.mark.parametrize(("fields", "status", "code", "param"), EDIT_REFUSALS)
def test_an_edit_openai_would_refuse_is_refused_and_not_generated(
    emulator: Emulator, client: httpx.Client, fields: dict[str, str], status: int, code: str, param: str
) -> None:
    # Given a multipart edit whose form breaks one rule
    data = {"prompt": PROMPT, "model": "gpt-image-2", **fields}
    # When it is sent
    response = client.post("/v1/images/edits", data=data, files={"image": ("in.png", png(), "image/png")})
    # Then it is refused naming the field, and nothing was generated
    error = error_of(response)
    assert (response.status_code, error["code"], error["param"]) == (status, code, param)
    assert emulator.calls()["totals"] == {"requests": 1, "generations": 0, "submissions": 0, "batched": 0}


def test_an_edit_without_an_image_is_refused(emulator: Emulator, client: httpx.Client) -> None:
    # Given a multipart edit with no image part
    data = {"prompt": PROMPT, "model": "gpt-image-2"}
    # When it is sent
    response = client.post("/v1/images/edits", data=data, files={"mask": ("mask.png", png(), "image/png")})
    # Then the image is named as missing
    error = error_of(response)
    assert (response.status_code, error["code"], error["param"]) == (400, "missing_required_parameter", "image")
    assert emulator.generations_for(PROMPT) == 0


def test_an_edit_reads_its_numbers_from_form_text(emulator: Emulator, client: httpx.Client) -> None:
    # Given an edit whose n and output_compression arrive as text, with the lenient edit-only fields
    data = {
        "prompt": PROMPT,
        "model": "gpt-image-1.5",
        "n": "2",
        "output_format": "jpeg",
        "output_compression": "40",
        "input_fidelity": "high",
    }
    files = [("image[]", ("a.png", png(), "image/png")), ("image[]", ("b.png", png(), "image/png"))]
    # When it is sent
    response = client.post("/v1/images/edits", data=data, files=files)
    # Then two jpeg images come back, counted as one generation
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2 and response.json()["output_format"] == "jpeg"
    assert emulator.generations_for(PROMPT) == 1


def test_a_refusal_comes_before_latency_and_faults() -> None:
    # Given an emulator that is slow and answers every accepted call with a rate limit
    emulator = Emulator(EmulatorConfig(latency_ms=3000, fault_rate=1.0, fault_kinds=("rate_limit",)))
    emulator.start("127.0.0.1", 0)
    try:
        # When a request it must refuse is sent
        started = time.monotonic()
        response = httpx.post(
            f"{emulator.url}/v1/images/generations",
            json={"prompt": PROMPT, "model": "dall-e-3"},
            headers={"Authorization": "Bearer sk-test"},
            timeout=10,
        )
        # Then the refusal comes at once, and no fault was drawn for it
        assert response.status_code == 404 and time.monotonic() - started < 2
        assert emulator.stats.as_dict()["faults"] == {}
    finally:
        emulator.stop()
