"""`Idempotency-Key` on job creation: one key, one job, per tenant; the job and its key are written together."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from darkroom import queue
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.pipeline import queue_url, receive
from tests.support import drain, http_event, response_json

BODY = {"prompt": "a kingfisher", "size": "1024x1024"}


@pytest.fixture(autouse=True)
def clean(stack: LocalStack) -> Iterator[None]:
    drain(queue_url(stack))
    yield


def post(stack: LocalStack, body: Any, key: str | None, tenant: str = "dev") -> dict[str, Any]:
    headers = {"idempotency-key": key} if key is not None else {}
    event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys[tenant], body=body, headers=headers)
    return dict(stack.functions["ApiFunction"].invoke(event))


def test_the_same_key_and_body_give_back_the_same_job(stack: LocalStack) -> None:
    # Given a job created with a key
    first = post(stack, BODY, "order-1001")
    assert first["statusCode"] == 202 and "idempotent-replayed" not in first["headers"]
    # When the client retries (its connection dropped before it saw the answer), fields in another order
    again = post(stack, dict(reversed(list(BODY.items()))), "order-1001")
    # Then it gets the same job back, marked as a replay, and only one message was ever queued
    assert again["statusCode"] == 202 and again["headers"]["idempotent-replayed"] == "true"
    assert response_json(again)["id"] == response_json(first)["id"]
    assert len(receive(stack)) == 1


def test_the_same_key_with_another_body_is_422(stack: LocalStack) -> None:
    post(stack, BODY, "order-1002")
    answer = post(stack, {**BODY, "size": "1536x1024"}, "order-1002")
    assert answer["statusCode"] == 422
    error = response_json(answer)["error"]
    assert error["code"] == "idempotency_key_reused"
    assert (error["fields"][0]["field"], error["fields"][0]["rule"]) == ("Idempotency-Key", "idempotency_key_reused")


def test_keys_belong_to_their_tenant(stack: LocalStack) -> None:
    mine = response_json(post(stack, BODY, "shared-name", tenant="dev"))["id"]
    theirs = post(stack, BODY, "shared-name", tenant="dev-2")
    assert theirs["statusCode"] == 202 and response_json(theirs)["id"] != mine
    assert "idempotent-replayed" not in theirs["headers"]


def test_requests_racing_with_one_key_make_one_job(stack: LocalStack) -> None:
    # Given eight requests with one key arriving together
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(8)

    def race() -> None:
        start.wait()
        answers.append(post(stack, BODY, "order-race"))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one job exists: every 202 names it, the rest were told to retry in a second
    ids = {response_json(a)["id"] for a in answers if a["statusCode"] == 202}
    assert len(ids) == 1, answers
    assert all(a["statusCode"] in (202, 409) for a in answers), [(a["statusCode"], a["body"][:200]) for a in answers]
    assert all(a["headers"].get("retry-after") == "1" for a in answers if a["statusCode"] == 409)
    assert len(receive(stack)) == 1


def test_a_failed_submission_releases_its_key(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a first attempt whose message could not be queued (withdrawn: nothing was started)
    with monkeypatch.context() as outage:
        outage.setattr(queue, "send_job", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("SQS down")))
        assert post(stack, BODY, "order-1003")["statusCode"] == 503
    # When the client retries with the same key / Then a job is created for real
    retry = post(stack, BODY, "order-1003")
    assert retry["statusCode"] == 202 and "idempotent-replayed" not in retry["headers"]
    assert JobStore().get(response_json(retry)["id"]) is not None


def test_a_key_whose_first_request_died_mid_way_answers_in_progress(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first request that wrote its job and key, then died before the message (so did its withdrawal)
    with monkeypatch.context() as outage:
        outage.setattr(queue, "send_job", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("SQS down")))
        outage.setattr(JobStore, "delete_unstarted", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("down")))
        assert post(stack, BODY, "order-1004")["statusCode"] == 503
    # When the client retries / Then it is told to wait, not given a second job
    retry = post(stack, BODY, "order-1004")
    assert retry["statusCode"] == 409 and response_json(retry)["error"]["code"] == "idempotency_key_in_progress"
    assert receive(stack) == []


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_400(stack: LocalStack, key: str) -> None:
    answer = post(stack, BODY, key)
    assert answer["statusCode"] == 400
    assert response_json(answer)["error"]["fields"][0]["rule"] == "idempotency_key_invalid"
    assert receive(stack) == []
