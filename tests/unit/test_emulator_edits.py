"""Edits on the emulator: OpenAI's input rules for images, masks, input_fidelity and markup, a visible change a test
can check (a magenta tint inside the mask's hole, nothing outside it), the `edits` report that proves what reached
the provider, and WaveSpeed's edit endpoint, which fetches its images from URLs."""

from __future__ import annotations

import base64
import io
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from darkroom import catalog
from darkroom_local.emulator import Emulator, EmulatorConfig
from darkroom_local.http_server import BackgroundHTTPServer

PROMPT = "paint the sky"
RED = (200, 10, 10)
# RED blended half way to magenta (255, 0, 255), as Pillow rounds it; written out, not taken from the emulator.
TINTED = (227, 5, 132)
WS_AUTH = {"Authorization": "Bearer ws-test"}
WS_EDIT = "/api/v3/openai/gpt-image-2/edit"
NOTHING_BILLED = {"requests": 1, "generations": 0, "submissions": 0, "batched": 0}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    running = Emulator(EmulatorConfig(async_ms=300))
    running.start("127.0.0.1", 0)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def fresh_counts(emulator: Emulator) -> None:
    emulator.reset()


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": "Bearer sk-test"}, timeout=30) as http:
        yield http


class ImageHost(BackgroundHTTPServer):
    """Serves the bytes put in `files` at their path, as S3 would serve a presigned GET; 404 for anything else."""

    thread_name = "image-host"

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}
        self.handler = _ImageHostHandler


class _ImageHostHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.owner.files.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        self.send_response(200 if data is not None else 404)
        self.send_header("content-length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    host.start("127.0.0.1", 0)
    yield host
    host.stop()


def picture(size: tuple[int, int] = (96, 64), fmt: str = "PNG", color: tuple[int, int, int] = RED) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def mask(
    size: tuple[int, int] = (96, 64), hole: tuple[int, int, int, int] = (0, 0, 48, 32), mode: str = "RGBA"
) -> bytes:
    """Opaque but for a fully transparent `hole` (left, top, right, bottom): what to edit. RGB has no alpha."""
    image = Image.new(mode, size, (0, 0, 0, 255)[: len(mode)])
    if mode == "RGBA":
        image.paste((0, 0, 0, 0), hole)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (96, 64)).save(out, "GIF")
    return out.getvalue()


def edit(client: httpx.Client, files: list[tuple[str, tuple[str, bytes, str]]], **fields: str) -> httpx.Response:
    return client.post("/v1/images/edits", data={"prompt": PROMPT, "model": "gpt-image-2", **fields}, files=files)


def image_part(data: bytes, name: str = "image[]", filename: str = "in.png") -> tuple[str, tuple[str, bytes, str]]:
    return (name, (filename, data, "image/png"))


def first_image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))).convert("RGB")


def assert_tinted(pixel: Any) -> None:
    assert all(abs(got - want) <= 1 for got, want in zip(pixel, TINTED, strict=True)), pixel


# (form fields besides prompt and model, file parts, param, code)
EDIT_INPUT_REFUSALS = [
    pytest.param(
        {},
        [image_part(picture()) for _ in range(catalog.MAX_EDIT_IMAGES + 1)],
        "image",
        "array_above_max_length",
        id="17-images",
    ),
    pytest.param({}, [image_part(gif(), filename="renamed.png")], "image", "invalid_image_format", id="gif-as-png"),
    pytest.param(
        {}, [image_part(picture()), image_part(b"not an image")], "image", "invalid_image_format", id="second-image"
    ),
    pytest.param(
        {}, [image_part(picture()), image_part(mask(mode="RGB"), "mask")], "mask", "invalid_value", id="mask-no-alpha"
    ),
    pytest.param(
        {},
        [image_part(picture()), image_part(mask(size=(64, 64)), "mask")],
        "mask",
        "invalid_value",
        id="mask-wrong-size",
    ),
    pytest.param(
        {},
        [image_part(picture()), image_part(picture(fmt="JPEG"), "mask")],
        "mask",
        "invalid_image_format",
        id="mask-not-png",
    ),
    pytest.param(
        {"input_fidelity": "high"},
        [image_part(picture())],
        "input_fidelity",
        "unsupported_parameter",
        id="input-fidelity-gpt-image-2",
    ),
    pytest.param(
        {"model": "gpt-image-1.5", "input_fidelity": "medium"},
        [image_part(picture())],
        "input_fidelity",
        "invalid_value",
        id="input-fidelity-value",
    ),
    pytest.param(
        {"model": "gpt-image-2.5-flare"},
        [image_part(picture()), image_part(mask(), "mask"), image_part(mask(), "markup")],
        "markup",
        "invalid_value",
        id="markup-with-mask",
    ),
    pytest.param(
        {"model": "gpt-image-1.5"},
        [image_part(picture()), image_part(mask(), "markup")],
        "markup",
        "unsupported_parameter",
        id="markup-gpt-image-1.5",
    ),
]


@pytest.mark.parametrize(("fields", "files", "param", "code"), EDIT_INPUT_REFUSALS)
def test_an_edit_whose_inputs_openai_would_refuse_is_refused_and_not_billed(
    emulator: Emulator,
    client: httpx.Client,
    fields: dict[str, str],
    files: list[tuple[str, tuple[str, bytes, str]]],
    param: str,
    code: str,
) -> None:
    # Given an edit whose files or edit-only fields break exactly one of OpenAI's rules
    # When it is sent
    response = edit(client, files, **fields)
    # Then it is OpenAI's 400 naming the field, and nothing went on to a render or a bill
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["param"], error["code"]) == (
        400,
        "invalid_request_error",
        param,
        code,
    ), error
    assert emulator.calls()["totals"] == NOTHING_BILLED
    assert emulator.calls()["prompts"][PROMPT]["edits"] == []
    assert emulator.stats.as_dict()["calls"] == 0


@pytest.mark.parametrize(
    ("limit", "part"),
    [("MAX_INPUT_IMAGE_BYTES", "image"), ("MAX_MASK_BYTES", "mask")],
)
def test_an_input_at_its_byte_limit_is_refused(
    emulator: Emulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch, limit: str, part: str
) -> None:
    # Given limits lowered to exactly the size of the file sent (50 MB uploads would only slow the test)
    files = [image_part(picture()), image_part(mask(), "mask")]
    monkeypatch.setattr(catalog, limit, len(files[0 if part == "image" else 1][1][1]))
    # When it is sent
    response = edit(client, files)
    # Then "under the limit" is strict: refused, naming the part, and not billed
    assert (response.status_code, response.json()["error"]["param"]) == (400, part)
    assert emulator.calls()["totals"] == NOTHING_BILLED


@pytest.mark.parametrize(
    ("size", "expected"),
    [("auto", (96, 64)), ("1536x1024", (1536, 1024))],
)
def test_a_masked_edit_tints_inside_the_hole_and_nothing_outside(
    emulator: Emulator, client: httpx.Client, size: str, expected: tuple[int, int]
) -> None:
    # Given a red image and a mask whose top-left quarter is fully transparent
    files = [image_part(picture()), image_part(mask(hole=(0, 0, 48, 32)), "mask")]
    # When it is edited at that size
    image = first_image(edit(client, files, size=size))
    # Then the output has the size asked for (auto: the image's own), the hole scaled with it
    assert image.size == expected
    width, height = expected
    # And inside the hole the pixels are tinted, while outside they are the source's exactly
    assert_tinted(image.getpixel((width // 10, height // 10)))
    assert_tinted(image.getpixel((width // 2 - 2, height // 2 - 2)))
    for outside in ((width // 2 + 2, height // 10), (width // 10, height // 2 + 2), (width - 1, height - 1)):
        assert image.getpixel(outside) == RED, outside


def test_an_edit_without_a_mask_tints_the_whole_image(emulator: Emulator, client: httpx.Client) -> None:
    # Given a red image and no mask
    files = [image_part(picture(size=(80, 120)), "image")]
    # When it is edited
    image = first_image(edit(client, files))
    # Then every pixel is tinted, the corner where generations carry their text mark included
    assert image.getcolors() == [(80 * 120, TINTED)]


def test_the_edits_report_shows_every_image_and_the_mask(emulator: Emulator, client: httpx.Client) -> None:
    # Given three images in three formats and sizes, and a mask the size of the first
    files = [
        image_part(picture()),
        image_part(picture(size=(32, 32), fmt="JPEG"), filename="b.jpg"),
        image_part(picture(size=(40, 30), fmt="WEBP"), filename="c.webp"),
        image_part(mask(), "mask"),
    ]
    # When the edit is sent
    response = edit(client, files, quality="low")
    # Then the provider's report shows one billed edit with all three images and the mask
    assert response.status_code == 200, response.text
    count = emulator.calls()["prompts"][PROMPT]
    assert count["generations"] == 1
    assert count["edits"] == [{"images": 3, "mask": True, "markup": False, "sizes": ["96x64", "32x32", "40x30"]}]
    # And the inputs were billed as image tokens
    assert response.json()["usage"]["input_tokens_details"]["image_tokens"] > 0


def test_markup_on_a_model_that_understands_it_is_reported(emulator: Emulator, client: httpx.Client) -> None:
    # Given an edit with a markup overlay for a 2.5 model
    files = [image_part(picture()), image_part(mask(), "markup")]
    # When it is sent
    response = edit(client, files, model="gpt-image-2.5-flare")
    # Then it is billed, and the report says the markup arrived
    assert response.status_code == 200, response.text
    (report,) = emulator.calls()["prompts"][PROMPT]["edits"]
    assert (report["markup"], report["mask"]) == (True, False)


def test_the_openai_sdk_edits_several_images_with_a_mask(emulator: Emulator, tmp_path: Path) -> None:
    # Given three image files and a mask on disk, as a caller of the official SDK would have them
    paths = []
    for name, data in (("a.png", picture()), ("b.webp", picture(fmt="WEBP")), ("c.jpg", picture(fmt="JPEG"))):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    (tmp_path / "mask.png").write_bytes(mask())
    sdk = openai.OpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
    # When the SDK sends them as one edit
    with (
        paths[0].open("rb") as a,
        paths[1].open("rb") as b,
        paths[2].open("rb") as c,
        (tmp_path / "mask.png").open("rb") as mask_file,
    ):
        result = sdk.images.edit(model="gpt-image-2", image=[a, b, c], mask=mask_file, prompt=PROMPT)
    # Then its answer parses, edited inside the hole only
    assert result.data and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB")
    assert image.size == (96, 64) and result.size == "96x64"
    assert_tinted(image.getpixel((5, 5)))
    assert image.getpixel((90, 60)) == RED
    # And the provider saw all three images and the mask
    (report,) = emulator.calls()["prompts"][PROMPT]["edits"]
    assert (report["images"], report["mask"]) == (3, True)


# WaveSpeed's edit: images by URL, fetched at submission.


def ws_edit(emulator: Emulator, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{emulator.url}{WS_EDIT}", json={"prompt": PROMPT, **body}, headers=WS_AUTH, timeout=30)


def poll_until_ended(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        data: dict[str, Any] = httpx.get(url, headers=WS_AUTH, timeout=10).json()["data"]
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.05)  # polling interval, as a client polls; the loop ends on the status, not on the sleep
    raise AssertionError("prediction never ended")


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("size", "expected"), [(None, (120, 80)), ("1024*1024", (1024, 1024))])
def test_a_wavespeed_edit_fetches_its_image_and_completes_tinted(
    emulator: Emulator,
    image_host: ImageHost,
    size: str | None,
    expected: tuple[int, int],
) -> None:
    # Given a PNG served over HTTP, as the local stack serves a presigned S3 GET
    image_host.files["/bucket/in.png"] = picture(size=(120, 80))
    url = f"{image_host.url}/bucket/in.png?X-Amz-Signature=abc"
    # When an edit of it is submitted and polled until it ends
    answer = ws_edit(emulator, {"images": [url], **({"size": size} if size else {})})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "created"
    data = poll_until_ended(answer.json()["data"]["urls"]["get"])
    # Then its output is the image at the size asked for (by default its own), tinted all over
    assert data["status"] == "completed", data
    (output,) = data["outputs"]
    image = Image.open(io.BytesIO(httpx.get(output, timeout=10).content)).convert("RGB")
    assert image.size == expected
    assert image.getcolors() == [(expected[0] * expected[1], TINTED)]
    # And it was one billed submission, whose edit the report shows without a mask
    count = emulator.calls()["prompts"][PROMPT]
    assert (count["submissions"], count["generations"]) == (1, 1)
    assert count["edits"] == [{"images": 1, "mask": False, "markup": False, "sizes": ["120x80"]}]


@pytest.mark.parametrize(
    ("images", "says"),
    [
        pytest.param(lambda host: [f"http://127.0.0.1:{unused_port()}/in.png"], "could not fetch", id="unreachable"),
        pytest.param(lambda host: [f"{host}/missing.png?X-Amz-Signature=secret"], "HTTP 404", id="not-found"),
        pytest.param(lambda host: [f"{host}/renamed.png"], "not a png, webp or jpeg", id="gif-as-png"),
        pytest.param(lambda host: ["file:///etc/passwd"], "http or https", id="not-http"),
        pytest.param(lambda host: [f"{host}/good.png"] * 17, "1 to 16", id="17-images"),
        pytest.param(lambda host: [], "1 to 16", id="no-images"),
    ],
)
def test_a_wavespeed_edit_whose_images_cannot_be_read_is_refused_and_not_billed(
    emulator: Emulator, image_host: ImageHost, images: Any, says: str
) -> None:
    # Given an image host with one good image and a GIF renamed .png
    image_host.files["/good.png"] = picture()
    image_host.files["/renamed.png"] = gif()
    # When an edit is submitted whose images are unreachable, missing, not an image format WaveSpeed takes, or wrong
    answer = ws_edit(emulator, {"images": images(image_host.url)})
    # Then it is a 400 in WaveSpeed's envelope that names the problem (never a presigned URL's signature)
    body = answer.json()
    assert (answer.status_code, body["code"], body["data"]) == (400, 400, None)
    assert says in body["message"] and "secret" not in body["message"]
    # And nothing was submitted, generated or billed
    assert emulator.calls()["totals"] == NOTHING_BILLED
