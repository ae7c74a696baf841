"""`Prefer: wait=N` on the api function: the ended job in OpenAI's shapes, a running one as 202, and how often the
wait reads the job."""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image

from darkroom import aws, quotas
from darkroom.api import openai_answers
from darkroom.errors import InvalidRequest
from darkroom.jobs.store import Job, JobStore
from darkroom.jobs.waiting import MAX_WAIT_S, look_times, requested_wait
from darkroom_local.stack import LocalStack
from tests.pipeline import call_api, deliver, queue_url, receive
from tests.support import drain, http_event, response_json

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture(autouse=True)
def empty_queue(stack: LocalStack) -> None:
    drain(queue_url(stack))


@pytest.fixture
def status_looks() -> Iterator[list[float]]:
    """When the wait looked at a job's status (its projected reads), as DynamoDB was asked."""
    looks: list[float] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        if params.get("ProjectionExpression") == "#status":
            looks.append(time.monotonic())

    events = aws.client("dynamodb").meta.events
    events.register("provide-client-params.dynamodb.GetItem", count, unique_id="status-looks")
    yield looks
    events.unregister("provide-client-params.dynamodb.GetItem", unique_id="status-looks")


def submit_waiting(
    stack: LocalStack, body: dict[str, Any], prefer: str, tenant: str = "dev"
) -> tuple[threading.Thread, dict[str, Any]]:
    """The submission in a thread of its own, as a client that waits; the answer lands in the returned dict."""
    answer: dict[str, Any] = {}
    event = http_event(
        "POST", "/v1/images/generations", api_key=stack.api_keys[tenant], body=body, headers={"prefer": prefer}
    )

    def send() -> None:
        started = time.monotonic()
        answer.update(stack.functions["ApiFunction"].invoke(event))
        answer["elapsed_s"] = time.monotonic() - started

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def next_messages(stack: LocalStack, timeout_s: float = 5) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if messages := receive(stack):
            return messages
        time.sleep(0.05)
    raise AssertionError("no job was queued")


def test_a_job_ending_in_time_answers_as_openai_does(stack: LocalStack, status_looks: list[float]) -> None:
    # Given a client that prefers to wait up to 10 s for two images
    thread, answer = submit_waiting(stack, {"prompt": "two cats", "n": 2, "size": "1024x1536"}, "wait=10")
    # When the worker runs the job about a second later
    messages = next_messages(stack)
    time.sleep(1)
    deliver(stack, messages)
    thread.join(15)
    # Then the answer is OpenAI's ImagesResponse with both images inline, and the job named in headers
    assert answer["statusCode"] == 200, answer["body"]
    body = response_json(answer)
    assert set(body) == {"created", "data", "usage", "size", "quality", "output_format", "background"}
    assert (body["size"], body["output_format"], body["quality"]) == ("1024x1536", "png", "auto")
    assert body["usage"]["output_tokens"] > 0 and len(body["data"]) == 2
    for item in body["data"]:
        image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert (image.format, image.size) == ("PNG", (1024, 1536))
    headers = answer["headers"]
    assert headers["darkroom-job-id"].startswith("job_") and headers["preference-applied"] == "wait=10"
    assert headers["location"] == f"/v1/jobs/{headers['darkroom-job-id']}"
    # ... found within a second of the job ending, by a handful of status reads rather than a tight loop
    assert 1 <= answer["elapsed_s"] < 3.5 and 3 <= len(status_looks) <= 6
    gaps = [b - a for a, b in itertools.pairwise(status_looks)]
    assert all(gap >= 0.2 for gap in gaps), gaps


def test_a_job_still_running_at_the_deadline_is_a_202(stack: LocalStack, status_looks: list[float]) -> None:
    # Given a wait of 3 s for a job no worker takes
    thread, answer = submit_waiting(stack, {"prompt": "a slow cat"}, "respond-async, wait=3")
    thread.join(10)
    # Then after the 3 s the answer is the job as it stands, with where to find it
    assert answer["statusCode"] == 202
    job = response_json(answer)
    assert job["status"] == "queued" and answer["headers"]["location"] == f"/v1/jobs/{job['id']}"
    assert job["urls"] == {
        "get": f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/jobs/{job['id']}",
        "cancel": f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/jobs/{job['id']}",
    }
    assert 3 <= answer["elapsed_s"] < 4.5
    # ... having looked at it as often as the schedule says: 5 reads for 3 s (22 for 20 s)
    assert len(status_looks) == len(look_times(3)) == 5


def test_a_refused_job_raises_openais_error(stack: LocalStack) -> None:
    thread, answer = submit_waiting(stack, {"prompt": "[refuse] a cat"}, "wait=10")
    deliver(stack, next_messages(stack))
    thread.join(15)
    assert answer["statusCode"] == 400
    error = response_json(answer)["error"]
    assert (error["code"], error["type"], error["param"]) == ("moderation_blocked", "image_generation_user_error", None)
    assert error["job_id"] == answer["headers"]["darkroom-job-id"]
    # The job has ended: the SDK must not send the request again on its own
    assert answer["headers"]["x-should-retry"] == "false"


def test_a_malformed_wait_is_refused_before_anything_is_queued(stack: LocalStack) -> None:
    event = http_event(
        "POST",
        "/v1/images/generations",
        api_key=stack.api_keys["dev"],
        body={"prompt": "a cat"},
        headers={"prefer": "wait=soon"},
    )
    status, body = call_api(stack, event)
    assert status == 400
    assert body["error"]["fields"][0] == {
        "field": "Prefer",
        "rule": "wait_seconds",
        "message": f"Prefer: wait takes whole seconds, e.g. 'Prefer: wait={MAX_WAIT_S}' "
        f"(at most {MAX_WAIT_S} are used).",
    }
    assert receive(stack) == []


def test_a_finished_job_links_its_deliveries_not_a_cancel(stack: LocalStack) -> None:
    _, queued = call_api(
        stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body={"prompt": "a cat"})
    )
    deliver(stack, next_messages(stack))
    _, done = call_api(stack, http_event("GET", f"/v1/jobs/{queued['id']}", api_key=stack.api_keys["dev"]))
    base = f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/jobs/{queued['id']}"
    assert done["status"] == "succeeded" and done["urls"] == {"get": base, "deliveries": f"{base}/deliveries"}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("", 0),
        ("wait=0", 0),
        ("wait=7", 7),
        ('wait="12"', 12),
        ("respond-async, wait=999", MAX_WAIT_S),
        ("return=minimal", 0),
        # Too large to hold is the largest, as delta-seconds are read; leading zeros are still a number
        ("wait=1234567", MAX_WAIT_S),
        ("wait=00000000000000003", 3),
        # A parameter's quoted value may hold commas and `wait=`: it is not a preference
        ('foo; bar="x, wait=20"', 0),
        ('foo; bar="x, wait=soon", wait=4', 4),
        ("x;wait=5", 0),
        ("wait=5, wait=9", 5),
    ],
)
def test_prefer_header_values(value: str, seconds: int) -> None:
    assert requested_wait({"prefer": value}) == seconds


@pytest.mark.parametrize(
    "value", ["wait=-1", "wait=1.5", "wait", "wait=١٢", 'wait="unterminated', "wait=", "wait=0x10"]
)
def test_prefer_wait_must_be_whole_seconds(value: str) -> None:
    with pytest.raises(InvalidRequest):
        requested_wait({"prefer": value})


def test_a_twenty_second_wait_reads_the_status_22_times_at_growing_gaps() -> None:
    times = look_times(20)
    gaps = [b - a for a, b in itertools.pairwise([0.0, *times])]
    assert len(times) == 22 and times[-1] == 20
    assert min(gaps) >= 0.25 and max(gaps) <= 1.0


def _ended(status: str, error: dict[str, Any] | None = None, outputs: list[dict[str, Any]] | None = None) -> Job:
    now = "2026-11-23T10:00:00+00:00"
    return Job(
        id="job_x",
        tenant="dev",
        kind="generation",
        status=status,
        request={"prompt": "p"},
        created_at=now,
        updated_at=now,
        completed_at=now,
        error=error,
        outputs=outputs or [],
        cost_usd=Decimal("0"),
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("provider_rejected", 400, "invalid_request_error"),
        ("moderation_flagged", 400, "image_generation_user_error"),
        ("rate_limited", 429, "rate_limit_error"),
        ("provider_unavailable", 503, "server_error"),
        ("provider_timeout", 504, "server_error"),
        ("provider_disconnected", 502, "server_error"),
        ("internal_error", 502, "server_error"),
    ],
)
def test_failed_jobs_answer_with_openais_status_for_the_same_failure(code: str, status: int, kind: str) -> None:
    answer = openai_answers.ended_job_answer(_ended("failed", {"code": code, "message": "m"}), {})
    assert (answer.status, answer.body["error"]["type"], answer.headers["x-should-retry"]) == (status, kind, "false")


def test_a_canceled_job_is_a_409() -> None:
    answer = openai_answers.ended_job_answer(_ended("canceled", {"code": "canceled", "message": "m"}), {})
    assert answer.status == 409 and answer.body["error"]["code"] == "canceled"


def test_outputs_too_large_to_inline_come_as_links(stack: LocalStack) -> None:
    big = [
        {"key": f"outputs/dev/job_x/{i}.png", "format": "png", "width": 2048, "height": 2048, "bytes": 2_000_000}
        for i in range(2)
    ]
    body = openai_answers.images_response(_ended("succeeded", outputs=big))
    assert [set(item) for item in body["data"]] == [{"url"}, {"url"}]
    assert body["size"] == "2048x2048" and "job_x/1.png" in body["data"][1]["url"]


def test_a_read_failing_mid_wait_answers_the_accepted_job(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # The job is accepted before the wait: a storage error then must not read as "not accepted, send it again"
    def unreadable(self: JobStore, job_id: str) -> str:
        raise RuntimeError("DynamoDB is having a bad day")

    monkeypatch.setattr(JobStore, "status_of", unreadable)
    thread, answer = submit_waiting(stack, {"prompt": "a cat in a storm"}, "wait=5")
    thread.join(10)
    assert answer["statusCode"] == 202 and response_json(answer)["status"] == "queued"
    assert answer["elapsed_s"] < 2


def test_outputs_unreadable_for_inline_come_as_links(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(key: str) -> str:
        raise RuntimeError("S3 is having a bad day")

    monkeypatch.setattr(openai_answers, "_base64_of", unreadable)
    small = [{"key": "outputs/dev/job_x/0.png", "format": "png", "width": 1024, "height": 1024, "bytes": 1000}]
    body = openai_answers.images_response(_ended("succeeded", outputs=small))
    assert [set(item) for item in body["data"]] == [{"url"}]


@pytest.fixture
def one_wait_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    one_slot = replace(quotas.settings(), waits_per_tenant=1)
    monkeypatch.setattr(quotas, "settings", lambda: one_slot)


@pytest.mark.usefixtures("one_wait_slot")
def test_a_tenants_waits_beyond_its_slots_answer_at_once(stack: LocalStack) -> None:
    # One slot per tenant: a second waiter of the same tenant must not hold another api execution
    holder, held = submit_waiting(stack, {"prompt": "a cat that takes its time"}, "wait=3")
    time.sleep(0.5)
    refused_thread, refused = submit_waiting(stack, {"prompt": "a second impatient cat"}, "wait=3")
    other_thread, other = submit_waiting(stack, {"prompt": "another tenant's cat"}, "wait=1", tenant="dev-2")
    for thread in (holder, refused_thread, other_thread):
        thread.join(10)
    assert refused["statusCode"] == 202 and refused["elapsed_s"] < 1.5
    assert "preference-applied" not in refused["headers"]
    assert held["statusCode"] == 202 and held["headers"]["preference-applied"] == "wait=3" and held["elapsed_s"] > 2.5
    # Another tenant has slots of its own, and the first one's slot was given back when its wait ended
    assert other["headers"]["preference-applied"] == "wait=1"
    again_thread, again = submit_waiting(stack, {"prompt": "a third cat"}, "wait=1")
    again_thread.join(10)
    assert again["headers"]["preference-applied"] == "wait=1"


@pytest.mark.usefixtures("one_wait_slot")
def test_a_slot_whose_holder_died_frees_itself(stack: LocalStack) -> None:
    # A holder that never gave its slot back (its invocation was killed) holds it only until its `until`
    dynamodb = aws.client("dynamodb")
    key = {"tenant": {"S": "dev"}, "record": {"S": "wait#0"}}
    item = {**key, "until": {"N": str(int(time.time()) + 60)}, "holder": {"S": "a-dead-request"}}
    dynamodb.put_item(TableName=quotas.tenants_table(), Item=item)
    with quotas.wait_slot("dev", 5, holder="r1") as held:
        assert not held
    dynamodb.put_item(TableName=quotas.tenants_table(), Item={**item, "until": {"N": str(int(time.time()) - 1)}})
    with quotas.wait_slot("dev", 5, holder="r2") as held:
        assert held
    assert dynamodb.get_item(TableName=quotas.tenants_table(), Key=key)["Item"]["until"] == {"N": "0"}


def test_an_answer_that_cannot_be_built_leaves_the_202(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Presigning or reading outputs failing after the job ended: the accepted job, never a 5xx
    def broken(job: Job, headers: dict[str, str]) -> Any:
        raise RuntimeError("no credentials to presign with")

    monkeypatch.setattr(openai_answers, "ended_job_answer", broken)
    thread, answer = submit_waiting(stack, {"prompt": "a cat, quickly"}, "wait=5")
    deliver(stack, next_messages(stack))
    thread.join(10)
    assert answer["statusCode"] == 202 and response_json(answer)["status"] == "succeeded"
