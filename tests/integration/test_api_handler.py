"""The api function against moto's server: every route, every mapped error, by status and body."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.support import drain, http_event, load_event, response_json


def call(stack: LocalStack, event: dict[str, Any]) -> tuple[int, Any]:
    response = stack.functions["ApiFunction"].invoke(event)
    return response["statusCode"], response_json(response)


def submit(stack: LocalStack, body: dict[str, Any], tenant: str = "dev") -> tuple[int, Any]:
    return call(stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys[tenant], body=body))


def queued_messages(stack: LocalStack) -> list[dict[str, Any]]:
    url = stack.template.attributes["JobsQueue"]["QueueUrl"]
    messages = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


@pytest.fixture(autouse=True)
def empty_queue(stack: LocalStack) -> None:
    drain(stack.template.attributes["JobsQueue"]["QueueUrl"])


def test_sample_event_creates_a_queued_job_and_one_message(stack: LocalStack) -> None:
    # Given the sample event with the dev tenant's key
    event = load_event("api_create_generation")
    event["headers"]["authorization"] = f"Bearer {stack.api_keys['dev']}"
    # When the api function handles it
    status, job = call(stack, event)
    # Then the job is accepted, stored, and on the queue
    assert status == 202
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert job["request"]["size"] == "1536x1024" and job["metadata"] == {"order": "42"}
    stored = JobStore().get(job["id"])
    assert stored is not None and stored.tenant == "dev"
    assert queued_messages(stack) == [{"job_id": job["id"], "tenant": "dev", "attempt": 0}]


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"prompt": "a cat", "size": "1000x1000"}, "size", "size_multiple_of_16"),
        ({"prompt": "a cat", "n": 11}, "n", "less_than_equal"),
        ({"prompt": "x" * 32_001}, "prompt", "string_too_long"),
        ({"prompt": "a cat", "model": "dall-e-3"}, "model", "model_retired"),
        (
            {"prompt": "a cat", "output_format": "png", "output_compression": 80},
            "output_compression",
            "compression_needs_jpeg_or_webp",
        ),
    ],
)
def test_invalid_requests_get_422_naming_field_and_rule_and_enqueue_nothing(
    stack: LocalStack, body: dict[str, Any], field: str, rule: str
) -> None:
    status, answer = submit(stack, body)
    assert status == 422
    assert answer["error"]["code"] == "validation_failed"
    assert {"field": field, "rule": rule} == {k: answer["error"]["fields"][0][k] for k in ("field", "rule")}
    assert queued_messages(stack) == []


def test_unreadable_body_is_400(stack: LocalStack) -> None:
    event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], raw_body="{not json")
    status, answer = call(stack, event)
    assert status == 400 and answer["error"]["code"] == "invalid_request"
    assert answer["error"]["fields"][0]["field"] == "body" and answer["error"]["fields"][0]["rule"] == "json_invalid"
    assert queued_messages(stack) == []


def test_longest_prompt_in_any_script_is_stored_whole(stack: LocalStack) -> None:
    # 32,000 characters of four-byte UTF-8: within the rules, so it must fit the job record too
    status, job = submit(stack, {"prompt": "\U0001f3a8" * 32_000})
    assert status == 202
    stored = JobStore().get(job["id"])
    assert stored is not None and stored.request["prompt"] == "\U0001f3a8" * 32_000


@pytest.mark.parametrize("authorization", [None, "Bearer dr_not_a_real_key", "Basic abc", "Bearer "])
def test_missing_or_wrong_key_is_401(stack: LocalStack, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    status, answer = call(stack, http_event("GET", "/v1/jobs", headers=headers))
    assert status == 401 and answer["error"]["code"] == "unauthorized"


def test_health_and_openapi_need_no_key(stack: LocalStack) -> None:
    assert call(stack, http_event("GET", "/health")) == (200, {"status": "ok"})
    status, document = call(stack, http_event("GET", "/openapi.json"))
    assert status == 200 and document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/",
        "/v1/models",
        "/health",
        "/openapi.json",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/uploads",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/deliveries",
        "/v1/jobs/{id}/deliveries/redeliver",
        "/v1/webhooks/endpoints",
        "/v1/webhooks/endpoints/{id}",
        "/v1/webhooks/endpoints/{id}/secret",
        "/v1/webhooks/endpoints/{id}/rotate",
        "/v1/webhooks/secret",
        "/v1/webhooks/secret/rotate",
        "/v1/usage",
    }
    assert "GenerationRequest" in document["components"]["schemas"]


def test_another_tenants_job_is_404(stack: LocalStack) -> None:
    _, job = submit(stack, {"prompt": "mine"}, tenant="dev")
    other = stack.api_keys["dev-2"]
    for method in ("GET", "DELETE"):
        status, answer = call(stack, http_event(method, f"/v1/jobs/{job['id']}", api_key=other))
        assert status == 404 and answer["error"]["code"] == "not_found"
    status, _ = call(stack, http_event("GET", f"/v1/jobs/{job['id']}", api_key=stack.api_keys["dev"]))
    assert status == 200
    status, _ = call(stack, http_event("GET", "/v1/jobs/job_doesnotexist", api_key=stack.api_keys["dev"]))
    assert status == 404


def test_list_is_newest_first_paginated_and_filtered(stack: LocalStack) -> None:
    key = stack.api_keys["dev-2"]
    ids = [submit(stack, {"prompt": f"p{i}"}, tenant="dev-2")[1]["id"] for i in range(5)]
    pages, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page = call(stack, http_event("GET", "/v1/jobs", api_key=key, query=query))
        assert status == 200
        pages.append([job["id"] for job in page["data"]])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    seen = [job_id for page in pages for job_id in page]
    assert seen[:5] == list(reversed(ids)) and len(seen) == len(set(seen))
    assert [len(p) for p in pages][:2] == [2, 2]
    # Filter: cancel one, then list canceled only
    call(stack, http_event("DELETE", f"/v1/jobs/{ids[0]}", api_key=key))
    _, canceled = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"status": "canceled"}))
    assert [job["id"] for job in canceled["data"]] == [ids[0]]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"status": "done"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit")],
)
def test_bad_list_queries_are_422(stack: LocalStack, query: dict[str, str], field: str) -> None:
    status, answer = call(stack, http_event("GET", "/v1/jobs", api_key=stack.api_keys["dev"], query=query))
    assert status == 422 and answer["error"]["fields"][0]["field"] == field


def test_forged_cursor_is_400(stack: LocalStack) -> None:
    event = http_event("GET", "/v1/jobs", api_key=stack.api_keys["dev"], query={"cursor": "bm90LWEtY3Vyc29y"})
    status, answer = call(stack, event)
    assert status == 400 and answer["error"]["fields"][0]["rule"] == "cursor_invalid"


def test_cancel_queued_job_writes_its_manifest(stack: LocalStack) -> None:
    key = stack.api_keys["dev"]
    _, job = submit(stack, {"prompt": "to cancel"})
    status, canceled = call(stack, http_event("DELETE", f"/v1/jobs/{job['id']}", api_key=key))
    assert status == 200 and canceled["status"] == "canceled"
    assert canceled["error"]["code"] == "canceled"
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    manifest = boto3.client("s3").get_object(Bucket=bucket, Key=f"outputs/dev/{job['id']}/result.json")
    assert json.loads(manifest["Body"].read())["status"] == "canceled"
    # Canceling again is harmless
    assert call(stack, http_event("DELETE", f"/v1/jobs/{job['id']}", api_key=key))[0] == 200


def test_cancel_running_job_is_409(stack: LocalStack) -> None:
    _, created = submit(stack, {"prompt": "busy"})
    store = JobStore()
    job = store.get(created["id"])
    assert job is not None
    store.claim(job, lease_s=60)
    status, answer = call(stack, http_event("DELETE", f"/v1/jobs/{job.id}", api_key=stack.api_keys["dev"]))
    assert status == 409 and answer["error"]["code"] == "job_running"


def test_queue_failure_leaves_no_job_behind(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from darkroom import queue

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("SQS is down")

    monkeypatch.setattr(queue, "send_job", refuse)
    key = stack.api_keys["dev-2"]
    _, before = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "100"}))
    status, answer = submit(stack, {"prompt": "unlucky"}, tenant="dev-2")
    assert status == 503 and answer["error"]["code"] == "service_unavailable"
    assert "SQS" not in json.dumps(answer)
    _, after = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "100"}))
    assert len(after["data"]) == len(before["data"])


def test_a_job_whose_record_landed_but_was_reported_failed_is_withdrawn(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = JobStore.create

    def create_then_lose_the_answer(self: JobStore, job: Any, **kwargs: Any) -> None:
        real_create(self, job, **kwargs)
        raise RuntimeError("read timeout")

    monkeypatch.setattr(JobStore, "create", create_then_lose_the_answer)
    key = stack.api_keys["dev-2"]
    _, before = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "100"}))
    status, answer = submit(stack, {"prompt": "unlucky"}, tenant="dev-2")
    assert status == 503 and "nothing was started" in answer["error"]["message"]
    _, after = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "100"}))
    assert len(after["data"]) == len(before["data"]) and queued_messages(stack) == []


def test_a_job_a_worker_already_took_is_accepted_even_if_the_send_looked_failed(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darkroom import queue

    real_send = queue.send_job

    def send_then_lose_the_answer(job_id: str, tenant: str, **kwargs: Any) -> None:
        real_send(job_id, tenant, **kwargs)
        store = JobStore()
        taken = store.get(job_id)
        assert taken is not None
        store.claim(taken, lease_s=60)  # a worker got the message meanwhile
        raise RuntimeError("read timeout")

    monkeypatch.setattr(queue, "send_job", send_then_lose_the_answer)
    status, job = submit(stack, {"prompt": "lucky after all"})
    assert status == 202
    stored = JobStore().get(job["id"])
    assert stored is not None and stored.status == "running"


@pytest.mark.parametrize(
    ("event_args", "status", "field", "rule"),
    [
        ({"query": {"limit": "\u00b2"}}, 422, "limit", "range"),  # "²".isdigit() is true
        ({"query": {"limit": "9" * 5000}}, 422, "limit", "range"),  # int() refuses over 4300 digits
        ({"query": {"limit": "\u0663"}}, 422, "limit", "range"),  # an Arabic-Indic three
        ({"query": {"cursor": "I2pvYl8"}}, 400, "cursor", "cursor_invalid"),  # decodes to "#job_"
        (
            {"query": {"cursor": base64.urlsafe_b64encode(("x" * 2000 + "#job_" + "a" * 26).encode()).decode()}},
            400,
            "cursor",
            "cursor_invalid",
        ),  # a key over DynamoDB's 1,024 bytes
        ({"query": {"cursor": "\u00e9" * 10}}, 400, "cursor", "cursor_invalid"),
    ],
    ids=["superscript", "5000-digits", "arabic-indic", "empty-key", "huge-key", "non-ascii"],
)
def test_list_queries_that_once_caused_5xx_are_4xx_naming_the_field(
    stack: LocalStack, event_args: dict[str, Any], status: int, field: str, rule: str
) -> None:
    answer_status, answer = call(stack, http_event("GET", "/v1/jobs", api_key=stack.api_keys["dev"], **event_args))
    assert answer_status == status
    assert (answer["error"]["fields"][0]["field"], answer["error"]["fields"][0]["rule"]) == (field, rule)


def test_a_deeply_nested_body_is_400_not_a_recursion_error(stack: LocalStack) -> None:
    event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], raw_body="[" * 1000)
    status, answer = call(stack, event)
    assert status == 400 and answer["error"]["fields"][0]["rule"] == "json_too_deep"
    assert queued_messages(stack) == []


def test_a_key_that_is_not_ascii_is_401_not_a_crash(stack: LocalStack) -> None:
    status, answer = call(stack, http_event("GET", "/v1/jobs", headers={"authorization": "Bearer \u00e9\ud800"}))
    assert status == 401 and answer["error"]["code"] == "unauthorized"


def test_a_page_of_the_largest_jobs_stays_far_below_lambdas_6_mb(stack: LocalStack) -> None:
    # Given 20 jobs with the longest prompts and metadata the rules allow, in four-byte characters
    tenant_key = stack.api_keys["dev-2"]
    metadata = {f"k{i:02d}" + "\U0001f3a8" * 60: "\U0001f3a8" * 512 for i in range(16)}
    ids = [
        submit(stack, {"prompt": "\U0001f3a8" * 32_000, "metadata": metadata}, tenant="dev-2")[1]["id"]
        for _ in range(20)
    ]
    # When they are listed
    response = stack.functions["ApiFunction"].invoke(
        http_event("GET", "/v1/jobs", api_key=tenant_key, query={"limit": "20"})
    )
    # Then the page is small (it was 9.6 MB), lists prompt previews, and the job itself still has the whole prompt
    assert response["statusCode"] == 200 and len(response["body"].encode()) < 1_500_000
    page = response_json(response)
    assert [job["id"] for job in page["data"]] == list(reversed(ids))
    assert all(job["prompt_truncated"] and len(job["request"]["prompt"]) == 200 for job in page["data"])
    status, whole = call(stack, http_event("GET", f"/v1/jobs/{ids[0]}", api_key=tenant_key))
    assert status == 200 and len(whole["request"]["prompt"]) == 32_000


def test_a_page_over_its_byte_budget_is_cut_and_continues(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a budget of about three summaries
    from darkroom.api import routes

    key = stack.api_keys["dev-2"]
    ids = [submit(stack, {"prompt": f"budget {i} " + "x" * 1000}, tenant="dev-2")[1]["id"] for i in range(5)]
    monkeypatch.setattr(routes, "PAGE_BUDGET_BYTES", 4_000)
    # When a page of five is asked for, then the rest
    _, first = call(stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "5"}))
    _, rest = call(
        stack, http_event("GET", "/v1/jobs", api_key=key, query={"limit": "5", "cursor": first["next_cursor"]})
    )
    # Then the first page stopped short and the next one carries on without a gap or a repeat
    assert 1 <= len(first["data"]) < 5 and first["has_more"]
    listed = [job["id"] for job in first["data"] + rest["data"]][:5]
    assert listed == list(reversed(ids))
