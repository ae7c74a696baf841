"""An endpoint's circuit breaker, against moto: after failed tries in a row, tries to it wait out a window without
being sent or using up an attempt, one probe a window goes through, and a success closes it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from darkroom.webhooks import delivery as delivery_module
from darkroom.webhooks import endpoints as endpoints_module
from darkroom.webhooks import notify as notify_module
from darkroom.webhooks.endpoints import (
    BREAKER_AFTER_FAILURES,
    BREAKER_FIRST_WINDOW_S,
    BREAKER_MAX_WINDOW_S,
    PROBE_LEASE_S,
    WebhookStore,
)
from darkroom_local.stack import LocalStack
from tests.integration.test_webhook_notify import (
    Clock,
    Receiver,
    Sent,
    call,
    first_tries,
    notify,
    run_job,
    start_receiver,
)
from tests.integration.test_webhook_notify import quiet_queues as _quiet_queues  # noqa: F401 (autouse fixture)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = start_receiver()
    yield server
    server.shutdown()


def ahead(monkeypatch: pytest.MonkeyPatch, offset: float) -> None:
    """Both sides of the breaker (the notify function and the endpoint store) `offset` seconds in the future."""
    monkeypatch.setattr(notify_module, "time", Clock(offset))
    monkeypatch.setattr(endpoints_module, "time", Clock(offset))


def set_health(stack: LocalStack, endpoint_id: str, **values: float) -> None:
    boto3.client("dynamodb").update_item(
        TableName=stack.template.attributes["WebhooksTable"]["Ref"],
        Key={"tenant": {"S": "dev"}, "item": {"S": f"endpoint#{endpoint_id}"}},
        UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in values),
        ExpressionAttributeValues={f":{name}": {"N": str(value)} for name, value in values.items()},
    )


def test_an_endpoint_failing_three_tries_in_a_row_holds_its_tries_back_until_a_probe_succeeds(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "0,0,0,0,0,0")
    from darkroom import aws

    aws.reset()
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given an endpoint that failed three tries in a row
        receiver.answers[:] = [500] * 4
        stuck = run_job(stack, prompt="a lighthouse for a subscriber in trouble")
        first_tries(stack)
        notify(stack, "WebhookRetryQueue")
        notify(stack, "WebhookRetryQueue")
        assert len(receiver.seen) == BREAKER_AFTER_FAILURES and store.get_endpoint("dev", endpoint.id).breaker_open()
        # When its next retry, and another job's first try, come up
        sent = Sent()
        monkeypatch.setattr(notify_module, "send_retry", sent)
        notify(stack, "WebhookRetryQueue")
        other = run_job(stack, prompt="a second lighthouse for it")
        notify(stack, "CompletionsQueue")
        (opened,) = sent[1:]
        notify_module.handle_retry_message(json.dumps(opened[0]))
        # Then neither is sent: each comes back when the window ends, and keeps its attempt
        assert len(receiver.seen) == BREAKER_AFTER_FAILURES
        (retry, retry_delay), _, (first, first_delay) = sent
        for delay_s in (retry_delay, first_delay):
            assert BREAKER_FIRST_WINDOW_S - 5 <= delay_s <= BREAKER_FIRST_WINDOW_S + 2
        assert (retry["attempt"], first["attempt"]) == (BREAKER_AFTER_FAILURES, 0)
        (record,) = call(stack, "GET", f"/v1/jobs/{stuck}/deliveries")[1]["data"]
        assert record["status"] == "retrying" and len(record["attempts"]) == BREAKER_AFTER_FAILURES

        # When the window has ended: the first to come back is the window's one probe, and it fails too
        ahead(monkeypatch, BREAKER_FIRST_WINDOW_S + 2)
        del sent[:]
        notify_module.handle_retry_message(json.dumps(retry))
        notify_module.handle_retry_message(json.dumps(first))
        # Then the other is held back again, for a longer window
        assert len(receiver.seen) == BREAKER_AFTER_FAILURES + 1
        (probe_retry, _), (first, first_delay) = sent
        assert 2 * BREAKER_FIRST_WINDOW_S - 5 <= first_delay <= 2 * BREAKER_FIRST_WINDOW_S + 2

        # When the next window's probe succeeds
        ahead(monkeypatch, 3 * BREAKER_FIRST_WINDOW_S + 5)
        del sent[:]
        notify_module.handle_retry_message(json.dumps(probe_retry))
        notify_module.handle_retry_message(json.dumps(first))
        # Then the breaker is closed, the tries behind it go through, and each used only the attempts it made
        assert len(receiver.seen) == BREAKER_AFTER_FAILURES + 3 and sent == []
        healed = store.get_endpoint("dev", endpoint.id)
        assert healed.failures == 0 and healed.failing_since is None and not healed.breaker_open()
        for job_id, tries in ((stuck, BREAKER_AFTER_FAILURES + 2), (other, 1)):
            (record,) = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")[1]["data"]
            assert record["status"] == "delivered" and len(record["attempts"]) == tries
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_only_one_worker_takes_a_windows_probe(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint(
        "dev", url="http://127.0.0.1:9/probe", events=["job.failed"], description="", enabled=True
    )
    try:
        # Given an endpoint whose breaker window has just ended, read by two workers
        set_health(stack, endpoint.id, failures=BREAKER_AFTER_FAILURES, breaker_until=time.time() - 1)
        one, two = store.get_endpoint("dev", endpoint.id), store.get_endpoint("dev", endpoint.id)
        # When both try to take the probe, only one gets it
        assert store.take_probe(one) is True and store.take_probe(two) is False
        # Then another takes it only once the first gives it back, or its worker's lease runs out
        store.release_probe(one)
        assert store.take_probe(two) is True
        ahead(monkeypatch, PROBE_LEASE_S + 1)
        assert store.take_probe(store.get_endpoint("dev", endpoint.id)) is True
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_a_breakers_window_grows_to_sqss_longest_delay(stack: LocalStack) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint(
        "dev", url="http://127.0.0.1:9/long", events=["job.failed"], description="", enabled=True
    )
    try:
        # Given an endpoint that has failed for a long time
        set_health(stack, endpoint.id, failures=500)
        # When it fails again
        failed = store.mark_endpoint(store.get_endpoint("dev", endpoint.id), failing=True)
        # Then its window is SQS's longest delay, so a postponed try is one message
        assert failed is not None and failed.breaker_until is not None
        assert BREAKER_MAX_WINDOW_S - 5 <= failed.breaker_until - time.time() <= BREAKER_MAX_WINDOW_S
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_an_endpoint_behind_its_breaker_is_still_disabled_after_five_days(
    stack: LocalStack, receiver: Receiver
) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given an endpoint failing for six days, its breaker's window over
        set_health(
            stack,
            endpoint.id,
            failing_since=time.time() - 6 * 24 * 3600,
            failures=BREAKER_AFTER_FAILURES + 40,
            breaker_until=time.time() - 1,
        )
        # When the window's probe fails
        receiver.answers[:] = [503]
        run_job(stack, prompt="a lighthouse probing a dead endpoint")
        first_tries(stack)
        # Then the endpoint is disabled
        assert len(receiver.seen) == 1
        disabled = store.get_endpoint("dev", endpoint.id)
        assert disabled.enabled is False and "5 days" in (disabled.disabled_reason or "")
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_an_answer_from_the_old_url_says_nothing_of_the_endpoints_new_one(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a try under way to an endpoint's URL when the tenant moves the endpoint, and the old URL answers 410
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    new_url = receiver.url + "/v2"

    def moved_while_sending(url: str, *args: Any, **kwargs: Any) -> delivery_module.Attempt:
        store.update_endpoint("dev", endpoint.id, {"url": new_url})
        return delivery_module.Attempt("gone", 410, 5, error="the subscriber answered 410 Gone")

    monkeypatch.setattr(notify_module.delivery, "send", moved_while_sending)
    try:
        # When the try's outcome is recorded
        run_job(stack, prompt="a lighthouse for a moving endpoint")
        first_tries(stack)

        # Then the endpoint at its new URL stays on, with no failure counted against it
        moved = store.get_endpoint("dev", endpoint.id)
        assert moved.url == new_url and moved.enabled, moved.disabled_reason
        assert moved.failures == 0
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_one_failure_after_a_quiet_week_restarts_the_clock_instead_of_disabling(
    stack: LocalStack, receiver: Receiver
) -> None:
    # Given an endpoint whose last try failed six days ago, with nothing sent since
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        set_health(stack, endpoint.id, failing_since=time.time() - 6 * 24 * 3600, failures=1)

        # When the next job's first try meets one 503
        receiver.answers[:] = [503]
        run_job(stack, prompt="a lighthouse after a quiet week")
        first_tries(stack)

        # Then it is not disabled: its failing clock starts again now
        after = store.get_endpoint("dev", endpoint.id)
        assert after.enabled, after.disabled_reason
        assert after.failing_since and time.time() - after.failing_since < 60
    finally:
        store.delete_endpoint("dev", endpoint.id)
