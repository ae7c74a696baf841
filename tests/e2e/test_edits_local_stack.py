"""Edits end to end through the local stack over HTTP, the three ways users send them: the official openai SDK's
`images.edit(...)`, a presigned POST sent straight to storage, and a file another system drops into the bucket."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import openai
import pytest
from PIL import Image

from darkroom_local.stack import LocalStack
from tests.e2e.served import api_client, served_stack, wait_for_end
from tests.images import image_bytes, mask_bytes

pytestmark = pytest.mark.e2e

BLUE = (40, 120, 200)
TINTED = ((40 + 255) // 2, 120 // 2, (200 + 255) // 2)


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def client(running: LocalStack) -> Iterator[httpx.Client]:
    with api_client(running) as http:
        yield http


def first_output(job: dict[str, Any]) -> Image.Image:
    """The job's first output, fetched through its presigned download link as a user would."""
    response = httpx.get(job["outputs"][0]["url"], timeout=10)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def close(pixel: Any, expected: tuple[int, ...]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(pixel[:3], expected, strict=True))


def test_the_official_sdks_edit_is_accepted_as_a_job_and_ends_edited(running: LocalStack, client: httpx.Client) -> None:
    # Given the official openai SDK pointed at darkroom
    sdk = openai.OpenAI(base_url=running.api_url + "/v1", api_key=running.api_keys["dev"], max_retries=0)
    image = io.BytesIO(image_bytes("png", (64, 48), color=BLUE))
    mask = io.BytesIO(mask_bytes((64, 48), hole=(0, 0, 32, 24)))

    # When it sends images.edit(...) with an image and a mask
    raw = sdk.images.with_raw_response.edit(model="gpt-image-2", image=[image], mask=mask, prompt="sdk e2e edit")

    # Then darkroom answers with the 202 job, which ends with the masked corner edited
    assert raw.http_response.status_code == 202
    accepted = raw.http_response.json()
    assert accepted["kind"] == "edit" and accepted["inputs"]["mask"]["format"] == "png"
    job = wait_for_end(client, accepted["id"])
    assert job["status"] == "succeeded", job["error"]
    output = first_output(job)
    assert close(output.getpixel((4, 4)), TINTED) and close(output.getpixel((60, 44)), BLUE)


def test_a_presigned_upload_starts_its_job(running: LocalStack, client: httpx.Client) -> None:
    # Given an upload opened through the API
    opened = client.post("/v1/uploads", json={"prompt": "uploaded e2e edit", "files": {"images": 1}}).json()
    assert opened["status"] == "awaiting_upload", opened
    (post,) = opened["uploads"]

    # When the image is sent with httpx straight to storage (moto's server), as a frontend would
    sent = httpx.post(
        post["url"],
        data={**post["fields"], "Content-Type": "image/webp"},
        files={"file": ("photo.webp", image_bytes("webp", (80, 60), color=BLUE), "image/webp")},
        timeout=30,
    )
    assert sent.status_code == 204

    # Then S3's event starts the job, which ends edited over the whole image, at the input's size
    job = wait_for_end(client, opened["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["inputs"]["images"][0]["format"] == "webp"
    output = first_output(job)
    assert output.size == (80, 60) and close(output.getpixel((40, 30)), TINTED)


def test_a_boto3_drop_in_with_metadata_becomes_a_finished_edit(running: LocalStack, client: httpx.Client) -> None:
    # Given another system dropping an image into the dev tenant's drop prefix, its request as metadata
    s3 = boto3.client("s3")
    bucket = running.template.attributes["OutputsBucket"]["Ref"]
    s3.put_object(
        Bucket=bucket,
        Key="uploads/dev/drop/e2e/card.jpg",
        Body=image_bytes("jpeg", (64, 64), color=BLUE),
        Metadata={"prompt": "drop-in e2e edit", "quality": "low", "metadata-batch": "7"},
    )

    # When darkroom answers next to the file
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = json.loads(
                s3.get_object(Bucket=bucket, Key="uploads/dev/drop/e2e/card.jpg.job.json")["Body"].read()
            )
            break
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, "no answer file for the dropped image"
            time.sleep(0.2)

    # Then the job it names belongs to the tenant, carries the metadata, and ends edited
    job = wait_for_end(client, answer["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metadata"] == {"batch": "7"} and job["request"]["quality"] == "low"
    assert close(first_output(job).getpixel((32, 32)), TINTED)
