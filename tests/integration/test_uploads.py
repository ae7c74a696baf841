"""Uploads and drop-ins against moto's server: presigned POSTs sent with httpx, S3 events through the uploads queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from darkroom import aws
from darkroom_local.pollers import sqs_record
from darkroom_local.stack import LocalStack
from tests.images import image_bytes, mask_bytes
from tests.pipeline import call_api, deliver, job, manifest, queue_url, receive, stored_image
from tests.support import drain, http_event, load_event

BLUE = (40, 120, 200)
TINTED = ((40 + 255) // 2, 120 // 2, (200 + 255) // 2)


@pytest.fixture(autouse=True)
def clean(stack: LocalStack, calm_provider: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    drain(queue_url(stack, "UploadsQueue"))
    yield
    drain(queue_url(stack, "UploadsQueue"))
    monkeypatch.undo()
    aws.reset()


def bucket(stack: LocalStack) -> str:
    return stack.template.attributes["OutputsBucket"]["Ref"]


def open_upload(stack: LocalStack, body: dict[str, Any], tenant: str = "dev") -> tuple[int, Any]:
    return call_api(stack, http_event("POST", "/v1/uploads", api_key=stack.api_keys[tenant], body=body))


def post_file(post: dict[str, Any], data: bytes, content_type: str = "image/png") -> httpx.Response:
    """What a frontend sends: the POST's fields, its Content-Type, then the file."""
    return httpx.post(
        post["url"], data={**post["fields"], "Content-Type": content_type}, files={"file": ("f", data, content_type)}
    )


def run_uploads_function(stack: LocalStack) -> int:
    """Deliver what S3 put on the uploads queue to the uploads function, as Lambda's mapping would."""
    url = queue_url(stack, "UploadsQueue")
    arn = stack.template.attributes["UploadsQueue"]["Arn"]
    handled = 0
    while True:
        messages = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not messages.get("Messages"):
            return handled
        for message in messages["Messages"]:
            result = stack.functions["UploadsFunction"].invoke({"Records": [sqs_record(message, arn)]})
            assert result == {"batchItemFailures": []}, result
            boto3.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            handled += 1


def keys_under(stack: LocalStack, prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket(stack), Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def close(pixel: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(pixel[:3], expected, strict=True))


def test_an_upload_job_waits_for_its_last_file_then_runs_as_an_edit(stack: LocalStack) -> None:
    # Given an upload for two images and a mask
    status, opened = open_upload(stack, {"prompt": "uploaded edit", "files": {"images": 2, "mask": True}})
    assert status == 201, opened
    assert opened["status"] == "awaiting_upload"
    posts = {post["field"]: post for post in opened["uploads"]}
    assert set(posts) == {"image[0]", "image[1]", "mask"}
    prefix = f"uploads/dev/jobs/{opened['id']}/"
    assert {post["fields"]["key"] for post in posts.values()} == {prefix + n for n in ("image-0", "image-1", "mask")}

    # When the first image lands, nothing is queued yet
    assert post_file(posts["image[0]"], image_bytes("png", (64, 48), color=BLUE)).status_code == 204
    run_uploads_function(stack)
    assert job(opened["id"]).status == "awaiting_upload" and receive(stack) == []

    # And when the rest land (a JPEG declared as a PNG among them), the job is queued with its judged inputs
    assert post_file(posts["image[1]"], image_bytes("jpeg", (64, 48)), "image/png").status_code == 204
    assert post_file(posts["mask"], mask_bytes((64, 48), hole=(0, 0, 32, 24))).status_code == 204
    run_uploads_function(stack)
    queued = job(opened["id"])
    assert queued.status == "queued" and queued.inputs
    assert [image["format"] for image in queued.inputs["images"]] == ["png", "jpeg"]
    assert keys_under(stack, prefix) == []  # copied to the inputs, then removed

    # Then the worker runs it: the masked corner is edited
    deliver(stack, receive(stack))
    done = job(opened["id"])
    assert done.status == "succeeded", done.error
    output = stored_image(stack, done.outputs[0]["key"]).convert("RGB")
    assert close(output.getpixel((4, 4)), TINTED) and close(output.getpixel((60, 44)), BLUE)


def test_an_uploaded_file_that_breaks_a_rule_fails_the_job_naming_it(stack: LocalStack) -> None:
    # Given an upload whose image arrives as a GIF (moto enforces no POST policy: darkroom's own check must)
    status, opened = open_upload(stack, {"prompt": "gif upload"})
    assert status == 201
    (post,) = opened["uploads"]
    post_file(post, image_bytes("gif"), "image/gif")

    # When its event is handled
    run_uploads_function(stack)

    # Then the job failed, saying which file broke which rule, with a manifest (so its webhook fires)
    failed = job(opened["id"])
    assert failed.status == "failed" and failed.error
    assert failed.error["code"] == "input_invalid"
    assert "image[0]" in failed.error["message"] and "image_format" in failed.error["message"]
    assert manifest(stack, failed)["status"] == "failed"
    assert receive(stack) == []


@pytest.fixture
def uploads_already_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads opened from here on are past their expiry, and the sweeper acts on them at once."""
    from darkroom import uploads

    monkeypatch.setattr(uploads, "expires_at", lambda ttl_s: time.time() - 1)
    monkeypatch.setenv("SWEEP_GRACE_S", "0")
    aws.reset()


@pytest.mark.usefixtures("uploads_already_due")
def test_an_upload_that_never_completes_expires_and_its_partial_files_are_deleted(stack: LocalStack) -> None:
    # Given an upload for two images, only one of which arrives, and whose time is up
    _, opened = open_upload(stack, {"prompt": "half an upload", "files": {"images": 2}})
    post_file(opened["uploads"][0], image_bytes("png"))
    run_uploads_function(stack)
    assert keys_under(stack, f"uploads/dev/jobs/{opened['id']}/")

    # When the sweeper runs
    report = stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule"))

    # Then the job failed as upload_expired, its manifest is written, and the file that came is gone
    assert opened["id"] in report["expired"]
    expired = job(opened["id"])
    assert expired.status == "failed" and expired.error and expired.error["code"] == "upload_expired"
    assert manifest(stack, expired)["error"]["code"] == "upload_expired"
    assert keys_under(stack, f"uploads/dev/jobs/{opened['id']}/") == []


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"files": {"images": 0}}, "files.images", "greater_than_equal"),
        ({"files": {"images": 17}}, "files.images", "less_than_equal"),
        ({"files": {"mask": True}, "provider": "wavespeed"}, "files.mask", "provider_not_supported"),
        ({"files": {"markup": True}}, "files.markup", "markup_not_supported"),
        ({"input_fidelity": "low"}, "input_fidelity", "input_fidelity_not_supported"),
        ({"files": {"pages": 2}}, "files.pages", "extra_forbidden"),
        ({"mask": {"b64_json": "aGk="}}, "mask", "upload_files"),
    ],
)
def test_an_upload_is_validated_as_any_edit(stack: LocalStack, body: dict[str, Any], field: str, rule: str) -> None:
    status, answer = open_upload(stack, {"prompt": "p", **body})
    assert status == 422, answer
    assert (field, rule) in {(f["field"], f["rule"]) for f in answer["error"]["fields"]}


def drop(stack: LocalStack, key: str, data: bytes, **metadata: str) -> None:
    boto3.client("s3").put_object(Bucket=bucket(stack), Key=key, Body=data, Metadata=metadata)


def answer_of(stack: LocalStack, key: str) -> dict[str, Any]:
    body = boto3.client("s3").get_object(Bucket=bucket(stack), Key=key)["Body"].read()
    return dict(json.loads(body))


def test_a_dropped_image_with_a_prompt_becomes_an_edit_job_and_says_which(stack: LocalStack) -> None:
    # Given an image another system puts in the dev tenant's drop prefix, with its request as metadata
    drop(
        stack,
        "uploads/dev/drop/catalog/shoe.png",
        image_bytes("png", (64, 48), color=BLUE),
        prompt="drop-in edit",
        size="1024x1024",
        **{"metadata-sku": "A-42", "output-format": "webp"},
    )

    # When its event is handled (twice: S3 may deliver an event more than once)
    run_uploads_function(stack)
    (message,) = receive(stack)
    drop(stack, "uploads/dev/drop/catalog/ignored.txt", b"no prompt, not an image")
    run_uploads_function(stack)

    # Then one edit job is queued for the dev tenant, and its id is written next to the file
    answer = answer_of(stack, "uploads/dev/drop/catalog/shoe.png.job.json")
    queued = job(answer["job_id"])
    assert queued.tenant == "dev" and queued.kind == "edit" and queued.metadata == {"sku": "A-42"}
    assert queued.request["size"] == "1024x1024" and queued.request["output_format"] == "webp"
    assert answer["job_url"].endswith(f"/v1/jobs/{queued.id}")
    deliver(stack, [message])
    done = job(queued.id)
    assert done.status == "succeeded", done.error
    assert stored_image(stack, done.outputs[0]["key"]).size == (1024, 1024)


def test_a_duplicate_drop_event_makes_no_second_job(stack: LocalStack) -> None:
    drop(stack, "uploads/dev/drop/twice.png", image_bytes("png"), prompt="dropped once")
    messages = boto3.client("sqs").receive_message(QueueUrl=queue_url(stack, "UploadsQueue"), WaitTimeSeconds=2)
    (message,) = messages["Messages"]
    arn = stack.template.attributes["UploadsQueue"]["Arn"]
    for _ in range(2):
        stack.functions["UploadsFunction"].invoke({"Records": [sqs_record(message, arn)]})
    assert len(receive(stack)) == 1
    drain(queue_url(stack))


def test_an_invalid_drop_gets_an_answer_file_holding_the_error_and_no_job(stack: LocalStack) -> None:
    drop(stack, "uploads/dev/drop/bad.png", image_bytes("png"), prompt="bad size", size="1000x1000")
    drop(stack, "uploads/dev/drop/fake.png", image_bytes("gif"), prompt="a gif")
    run_uploads_function(stack)
    bad = answer_of(stack, "uploads/dev/drop/bad.png.job.json")
    assert [(f["field"], f["rule"]) for f in bad["error"]["fields"]] == [("size", "size_multiple_of_16")]
    fake = answer_of(stack, "uploads/dev/drop/fake.png.job.json")
    assert [(f["field"], f["rule"]) for f in fake["error"]["fields"]] == [("images[0]", "image_format")]
    assert receive(stack) == []


def test_a_request_file_names_images_and_a_mask_in_its_prefix(stack: LocalStack) -> None:
    # Given two images and a mask dropped without prompts, then a request file naming them
    drop(stack, "uploads/dev-2/drop/shoot/a.png", image_bytes("png", (64, 48), color=BLUE))
    drop(stack, "uploads/dev-2/drop/shoot/b.webp", image_bytes("webp", (32, 32)))
    drop(stack, "uploads/dev-2/drop/shoot/m.png", mask_bytes((64, 48), hole=(0, 0, 64, 24)))
    request = {"prompt": "request file edit", "images": ["a.png", "b.webp"], "mask": "m.png", "metadata": {"k": "v"}}
    drop(stack, "uploads/dev-2/drop/shoot/look.edit.json", json.dumps(request).encode())

    # When the events are handled
    run_uploads_function(stack)

    # Then one job of the second tenant edits both images with the mask
    answer = answer_of(stack, "uploads/dev-2/drop/shoot/look.job.json")
    queued = job(answer["job_id"])
    assert queued.tenant == "dev-2" and queued.inputs and len(queued.inputs["images"]) == 2 and queued.inputs["mask"]
    assert len(receive(stack)) == 1
    drain(queue_url(stack))


def test_nothing_outside_a_tenants_drop_and_jobs_prefixes_makes_a_job(stack: LocalStack) -> None:
    drop(stack, "uploads/dev/library/cat.png", image_bytes("png"), prompt="library files are not drop-ins")
    drop(stack, "uploads/dev/jobs/catalog/logo.png", image_bytes("png"))  # a tenant's folder named jobs/
    drop(stack, "uploads/dev/jobs/job_00000000000000000000000000/logo.png", image_bytes("png"))
    drop(stack, "uploads/Not_A_Tenant/drop/cat.png", image_bytes("png"), prompt="no such tenant prefix")
    drop(stack, "inputs/dev/job_x/image-0.png", image_bytes("png"), prompt="not under uploads")
    run_uploads_function(stack)
    assert receive(stack) == []
    assert keys_under(stack, "uploads/dev/library/cat.png.job.json") == []
    # and a tenant's own files under a folder named jobs/ are left where they are
    assert keys_under(stack, "uploads/dev/jobs/catalog/") == ["uploads/dev/jobs/catalog/logo.png"]
    assert keys_under(stack, "uploads/dev/jobs/job_00000000000000000000000000/") != []


@pytest.mark.usefixtures("uploads_already_due")
def test_an_upload_whose_files_all_arrived_is_completed_by_the_sweeper_not_expired(stack: LocalStack) -> None:
    # Given an upload whose every file arrived but whose event was never handled, and whose time is up
    _, opened = open_upload(stack, {"prompt": "complete but unheard"})
    post_file(opened["uploads"][0], image_bytes("png"))
    drain(queue_url(stack, "UploadsQueue"))  # the event is lost

    # When the sweeper finds it, it hands the upload back to the uploads function, and does not look again soon
    report = stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule"))
    assert opened["id"] in report["renotified"] and job(opened["id"]).status == "awaiting_upload"
    again = stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule"))
    assert opened["id"] not in again["renotified"]
    run_uploads_function(stack)

    # Then the upload is not thrown away: the job is queued with its input
    queued = job(opened["id"])
    assert queued.status == "queued" and queued.inputs, queued.error
    assert len(receive(stack)) == 1
    drain(queue_url(stack))


def test_a_canceled_upload_keeps_no_files_and_takes_no_more(stack: LocalStack) -> None:
    # Given an upload for two images, one arrived, then canceled by the tenant
    _, opened = open_upload(stack, {"prompt": "canceled upload", "files": {"images": 2}})
    post_file(opened["uploads"][0], image_bytes("png"))
    run_uploads_function(stack)
    canceled = call_api(stack, http_event("DELETE", f"/v1/jobs/{opened['id']}", api_key=stack.api_keys["dev"]))
    assert canceled[0] == 200 and canceled[1]["status"] == "canceled"
    assert keys_under(stack, f"uploads/dev/jobs/{opened['id']}/") == []

    # When the second file still comes through its presigned POST
    post_file(opened["uploads"][1], image_bytes("png"))
    run_uploads_function(stack)

    # Then it is deleted too, and nothing is queued
    assert keys_under(stack, f"uploads/dev/jobs/{opened['id']}/") == []
    assert job(opened["id"]).status == "canceled" and receive(stack) == []


def test_a_drop_with_malformed_encoded_metadata_still_gets_its_job(stack: LocalStack) -> None:
    drop(stack, "uploads/dev/drop/odd-meta.png", image_bytes("png"), prompt="odd metadata", note="=?utf-8?b?a?=")
    run_uploads_function(stack)
    answer = answer_of(stack, "uploads/dev/drop/odd-meta.png.job.json")
    assert job(answer["job_id"]).status == "queued"
    drain(queue_url(stack))


def test_a_drop_that_cannot_be_queued_now_is_retried_not_answered(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SQS refusing the job's message for a moment
    from darkroom import queue

    def refused(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("SQS is unavailable")

    monkeypatch.setattr(queue, "send_job", refused)
    drop(stack, "uploads/dev/drop/later.png", image_bytes("png"), prompt="dropped while SQS is down")
    messages = boto3.client("sqs").receive_message(QueueUrl=queue_url(stack, "UploadsQueue"), WaitTimeSeconds=2)
    (message,) = messages["Messages"]
    arn = stack.template.attributes["UploadsQueue"]["Arn"]

    # When the uploads function handles the event, it fails the record (SQS will bring it back) and answers nothing
    result = stack.functions["UploadsFunction"].invoke({"Records": [sqs_record(message, arn)]})
    assert result["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    assert keys_under(stack, "uploads/dev/drop/later.png.job.json") == []

    # And once SQS is back, the same event makes the job and its answer
    monkeypatch.undo()
    stack.functions["UploadsFunction"].invoke({"Records": [sqs_record(message, arn)]})
    assert job(answer_of(stack, "uploads/dev/drop/later.png.job.json")["job_id"]).status == "queued"
    drain(queue_url(stack))


def test_the_same_image_dropped_again_with_other_metadata_is_another_edit(stack: LocalStack) -> None:
    data = image_bytes("png")
    drop(stack, "uploads/dev/drop/again.png", data, prompt="first wording")
    run_uploads_function(stack)
    first = answer_of(stack, "uploads/dev/drop/again.png.job.json")["job_id"]
    drop(stack, "uploads/dev/drop/again.png", data, prompt="corrected wording")
    run_uploads_function(stack)
    second = answer_of(stack, "uploads/dev/drop/again.png.job.json")
    assert "error" not in second and second["job_id"] != first
    assert job(second["job_id"]).request["prompt"] == "corrected wording"
    drain(queue_url(stack))
