"""Edits through the api and the worker against moto and the emulator: the SDK's multipart, JSON sources, refusals."""

from __future__ import annotations

import base64
import io
from typing import Any

import boto3
import pytest

from darkroom_local.stack import LocalStack
from tests.images import image_bytes, mask_bytes
from tests.pipeline import (
    call_api,
    deliver,
    execution,
    job,
    manifest,
    queue_url,
    receive,
    sdk_edit_event,
    stored_image,
    submissions,
    submit,
)
from tests.support import drain, http_event

pytestmark = pytest.mark.usefixtures("calm_provider")

BLUE = (40, 120, 200)
TINTED = ((40 + 255) // 2, 120 // 2, (200 + 255) // 2)  # the emulator's edit: halfway to magenta


def close(pixel: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(pixel[:3], expected, strict=True))


def edit_json(stack: LocalStack, body: dict[str, Any], tenant: str = "dev", **headers: str) -> tuple[int, Any]:
    event = http_event("POST", "/v1/images/edits", api_key=stack.api_keys[tenant], body=body, headers=headers)
    return call_api(stack, event)


def b64(data: bytes) -> dict[str, str]:
    return {"b64_json": base64.b64encode(data).decode()}


def prompt_report(stack: LocalStack, prompt: str) -> dict[str, Any]:
    assert stack.emulator is not None
    return dict(stack.emulator.calls()["prompts"][prompt])


def test_the_sdks_multipart_edit_with_a_mask_becomes_an_edited_image(stack: LocalStack) -> None:
    # Given the official SDK's edit of three images with a mask whose hole is the top-left quarter
    images = [io.BytesIO(image_bytes("png", (64, 48), color=BLUE)) for _ in range(3)]
    mask = io.BytesIO(mask_bytes((64, 48), hole=(0, 0, 32, 24)))
    prompt = "sdk multipart edit with a mask"
    event = sdk_edit_event(stack, model="gpt-image-2", image=images, mask=mask, prompt=prompt, size="auto")

    # When the api takes it and the worker runs it
    status, accepted = call_api(stack, event)
    assert status == 202, accepted
    assert accepted["kind"] == "edit" and len(accepted["inputs"]["images"]) == 3 and accepted["inputs"]["mask"]
    deliver(stack, receive(stack))

    # Then the provider got the three images and the mask, and the output shows the edit where the mask is open
    done = job(accepted["id"])
    assert done.status == "succeeded", done.error
    report = prompt_report(stack, prompt)
    assert report["edits"] == [{"images": 3, "mask": True, "markup": False, "sizes": ["64x48"] * 3}]
    output = stored_image(stack, done.outputs[0]["key"]).convert("RGB")
    assert output.size == (64, 48)
    assert close(output.getpixel((5, 5)), TINTED) and close(output.getpixel((60, 44)), BLUE)
    # And the image input tokens the provider reported are in the usage, and paid for
    assert done.usage and done.usage["input_tokens_details"]["image_tokens"] > 0
    assert manifest(stack, done)["inputs"]["mask"]["format"] == "png"


def test_inputs_are_stored_under_the_jobs_inputs_prefix_before_it_is_queued(stack: LocalStack) -> None:
    # Given a JSON edit with one base64 JPEG
    status, accepted = edit_json(stack, {"prompt": "json edit", "images": [b64(image_bytes("jpeg", (80, 60)))]})
    assert status == 202, accepted

    # Then its input is in S3 under inputs/{tenant}/{job}/ as the JPEG it really is, before any worker ran
    (image,) = accepted["inputs"]["images"]
    assert image["key"] == f"inputs/dev/{accepted['id']}/image-0.jpg"
    assert (image["format"], image["width"], image["height"]) == ("jpeg", 80, 60)
    assert stored_image(stack, image["key"]).format == "JPEG"
    drain(queue_url(stack))


def test_an_output_of_an_earlier_job_can_be_edited_and_another_tenants_cannot(stack: LocalStack) -> None:
    # Given a finished generation of the dev tenant
    generated = submit(stack, prompt="to be edited later")
    deliver(stack, receive(stack))
    assert job(generated).status == "succeeded"

    # When the same tenant edits its output, and another tenant names the same job
    status, accepted = edit_json(
        stack, {"prompt": "edit of an output", "images": [{"job_output": {"job_id": generated, "index": 0}}]}
    )
    other_status, other = edit_json(
        stack, {"prompt": "not mine", "images": [{"job_output": {"job_id": generated}}]}, tenant="dev-2"
    )

    # Then the first is accepted and runs; the other tenant is told no such job, as if it did not exist
    assert status == 202, accepted
    deliver(stack, receive(stack))
    assert job(accepted["id"]).status == "succeeded"
    assert other_status == 422
    assert other["error"]["fields"][0] == {
        "field": "images[0]",
        "rule": "job_not_found",
        "message": other["error"]["fields"][0]["message"],
    }


def test_a_file_under_the_tenants_uploads_prefix_can_be_named(stack: LocalStack) -> None:
    # Given a file the dev tenant put under its uploads prefix
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    boto3.client("s3").put_object(Bucket=bucket, Key="uploads/dev/library/shoe.webp", Body=image_bytes("webp"))

    # When an edit names it, and another edit names a file that is not there
    status, accepted = edit_json(stack, {"prompt": "from a file", "images": [{"file": "library/shoe.webp"}]})
    missing_status, missing = edit_json(stack, {"prompt": "from nothing", "images": [{"file": "library/none.png"}]})

    # Then the first is copied in as the job's input; the second names its field and rule
    assert status == 202, accepted
    assert accepted["inputs"]["images"][0]["format"] == "webp"
    assert stored_image(stack, accepted["inputs"]["images"][0]["key"]).format == "WEBP"
    assert missing_status == 422 and missing["error"]["fields"][0]["rule"] == "file_not_found"
    drain(queue_url(stack))


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"images": []}, "images", "image_required"),
        ({"images": [{"b64_json": "x"}] * 17}, "images", "too_many_images"),
        ({"images": [b64(image_bytes("gif"))]}, "images[0]", "image_format"),
        ({"images": [b64(image_bytes("png") + b"PK\x03\x04zip")]}, "images[0]", "image_trailing_data"),
        (
            {"images": [b64(image_bytes("png", (64, 48)))], "mask": b64(mask_bytes((32, 32)))},
            "mask",
            "mask_dimensions",
        ),
        ({"images": [b64(image_bytes("png"))], "mask": b64(image_bytes("png"))}, "mask", "mask_alpha"),
        (
            {"images": [b64(image_bytes("png"))], "input_fidelity": "high"},
            "input_fidelity",
            "input_fidelity_not_supported",
        ),
        ({"images": [{"image_url": "https://example.com/cat.png"}]}, "images[0]", "image_url_not_data"),
        ({"images": [{"b64_json": "***"}]}, "images[0]", "base64_invalid"),
        ({"images": [{"b64_json": "eA==", "file": "a.png"}]}, "images[0]", "image_source"),
        ({"images": [{"file": "../dev-2/x.png"}]}, "images[0]", "file_name"),
        ({"n": "2", "images": [{"b64_json": "aGk="}]}, "n", "int_type"),
        (
            {"images": [b64(image_bytes("png"))], "mask": b64(mask_bytes()), "provider": "wavespeed"},
            "mask",
            "provider_not_supported",
        ),
        (
            {
                "images": [b64(image_bytes("png"))],
                "model": "gpt-image-2.5-flare",
                "markup": b64(mask_bytes()),
                "mask": b64(mask_bytes()),
            },
            "markup",
            "markup_with_mask",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_json_edit_breaking_a_rule_is_a_422_naming_it_and_queues_nothing(
    stack: LocalStack, body: dict[str, Any], field: str, rule: str
) -> None:
    drain(queue_url(stack))
    status, answer = edit_json(stack, {"prompt": "refused edit", **body})
    assert status == 422, answer
    assert {"field": field, "rule": rule} in [
        {"field": f["field"], "rule": f["rule"]} for f in answer["error"]["fields"]
    ]
    assert receive(stack) == []


def test_an_sdk_edit_breaking_rules_names_its_form_fields(stack: LocalStack) -> None:
    # Given the SDK sending a GIF as its second image and input_fidelity to gpt-image-2
    images = [io.BytesIO(image_bytes("png")), ("cat.png", io.BytesIO(image_bytes("gif")), "image/png")]
    event = sdk_edit_event(stack, model="gpt-image-2", image=images, prompt="bad form", input_fidelity="high")

    # Then the answer names the form's own fields
    status, answer = call_api(stack, event)
    assert status == 422, answer
    rules = {(f["field"], f["rule"]) for f in answer["error"]["fields"]}
    assert ("input_fidelity", "input_fidelity_not_supported") in rules


def test_an_sdk_edit_with_a_gif_is_refused_by_the_image_it_sent(stack: LocalStack) -> None:
    images = [io.BytesIO(image_bytes("png")), ("cat.png", io.BytesIO(image_bytes("gif")), "image/png")]
    status, answer = call_api(stack, sdk_edit_event(stack, model="gpt-image-2", image=images, prompt="gif"))
    assert status == 422
    assert [(f["field"], f["rule"]) for f in answer["error"]["fields"]] == [("image[1]", "image_format")]


def test_a_body_over_the_inline_limit_is_a_413_pointing_to_uploads(stack: LocalStack) -> None:
    big = io.BytesIO(image_bytes("png") + b"\x00" * (4 * 1024 * 1024))
    status, answer = call_api(stack, sdk_edit_event(stack, model="gpt-image-2", image=big, prompt="too big"))
    assert status == 413
    assert "/v1/uploads" in answer["error"]["message"]


def test_the_same_edit_with_the_same_idempotency_key_is_one_job(stack: LocalStack) -> None:
    drain(queue_url(stack))
    body = {"prompt": "idempotent edit", "images": [b64(image_bytes("png"))]}
    first_status, first = edit_json(stack, body, **{"idempotency-key": "edit-1"})
    again_status, again = edit_json(stack, body, **{"idempotency-key": "edit-1"})
    other_status, _ = edit_json(
        stack, {**body, "images": [b64(image_bytes("png", color=(1, 2, 3)))]}, **{"idempotency-key": "edit-1"}
    )
    assert (first_status, again_status, other_status) == (202, 202, 422)
    assert again["id"] == first["id"]
    assert len(receive(stack)) == 1
    drain(queue_url(stack))


def test_a_wavespeed_edit_sends_links_to_its_inputs_and_ends_edited(stack: LocalStack) -> None:
    # Given an edit on the asynchronous route
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 0.5
    prompt = "wavespeed edit of a blue card"
    body = {"prompt": prompt, "provider": "wavespeed", "images": [b64(image_bytes("png", (96, 64), color=BLUE))]}
    status, accepted = edit_json(stack, body)
    assert status == 202, accepted

    # When the worker submits it and its poller follows it to the end
    deliver(stack, receive(stack))
    assert job(accepted["id"]).status == "polling"
    assert execution(stack, accepted["id"])["status"] == "SUCCEEDED"

    # Then WaveSpeed fetched the stored input through its link, once, and the output is the tinted edit
    done = job(accepted["id"])
    assert done.status == "succeeded", done.error
    assert submissions(stack, prompt) == 1
    assert prompt_report(stack, prompt)["edits"] == [{"images": 1, "mask": False, "markup": False, "sizes": ["96x64"]}]
    output = stored_image(stack, done.outputs[0]["key"]).convert("RGB")
    assert output.size == (96, 64) and close(output.getpixel((48, 32)), TINTED)
