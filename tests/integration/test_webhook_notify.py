"""The notify function against moto: a manifest's S3 event becomes one signed delivery per target, retried with the
same webhook-id, once per intent however often S3 or SQS repeat themselves."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from standardwebhooks.webhooks import Webhook

from darkroom import aws
from darkroom.webhooks import notify as notify_module
from darkroom.webhooks.endpoints import WebhookStore
from darkroom_local.pollers import sqs_record
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, queue_url, receive, submit
from tests.support import drain, http_event


class Receiver(http.server.ThreadingHTTPServer):
    answers: list[int]
    seen: list[tuple[dict[str, str], bytes]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that drops its kept-alive connection is no error of the test's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


def start_receiver() -> Receiver:
    """A subscriber on 127.0.0.1 answering from `answers` (then 200), keeping what it was sent."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server: Receiver = self.server  # type: ignore[assignment]
            server.seen.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(server.answers.pop(0) if server.answers else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = Receiver(("127.0.0.1", 0), Handler)
    server.answers, server.seen = [], []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = start_receiver()
    yield server
    server.shutdown()


class Clock:
    """`time` as a module sees it, `offset` seconds ahead: SQS's visibility timeouts and delays without the wait."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Sent(list[tuple[dict[str, Any], float]]):
    """Retry messages as send_retry was given them, kept here rather than queued (their delays are real in moto)."""

    def __call__(self, message: dict[str, Any], delay_s: float) -> None:
        self.append(({**message, "not_before": message.get("not_before") or time.time() + delay_s}, delay_s))


@pytest.fixture(autouse=True)
def quiet_queues(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("JobsQueue", "CompletionsQueue", "WebhookRetryQueue"):
        drain(queue_url(stack, name))
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "0,0,0")
    aws.reset()
    yield
    monkeypatch.undo()
    aws.reset()


def run_job(stack: LocalStack, **body: Any) -> str:
    job_id = submit(stack, **body)
    deliver(stack, receive(stack))
    return job_id


def notify(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    """Hand every message of a queue to the notify function, as its event source mapping would."""
    messages = receive(stack, queue, wait_s=1)
    arn = stack.template.attributes[queue]["Arn"]
    for message in messages:
        stack.functions["NotifyFunction"].invoke({"Records": [sqs_record(message, arn)]})
        boto3.client("sqs").delete_message(QueueUrl=queue_url(stack, queue), ReceiptHandle=message["ReceiptHandle"])
    return messages


def first_tries(stack: LocalStack) -> list[dict[str, Any]]:
    """The completions queue's events open their deliveries, whose first tries are messages on the retry queue."""
    completions = notify(stack, "CompletionsQueue")
    notify(stack, "WebhookRetryQueue")
    return completions


def test_a_jobs_webhook_url_gets_one_verified_event(stack: LocalStack, receiver: Receiver) -> None:
    job_id = run_job(stack, prompt="a hooked lighthouse", webhook_url=receiver.url, metadata={"order": "7"})
    (completion,) = first_tries(stack)  # S3 sent the manifest's event to the completions queue
    (headers, body) = receiver.seen[0]
    event = Webhook(WebhookStore().tenant_secrets("dev")[0]).verify(body, headers)
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
    assert event["data"]["metadata"] == {"order": "7"} and event["data"]["outputs"][0]["url"].startswith("http")
    # S3 (or SQS) sending the same event again delivers nothing more
    arn = stack.template.attributes["CompletionsQueue"]["Arn"]
    stack.functions["NotifyFunction"].invoke({"Records": [sqs_record(completion, arn)]})
    notify(stack, "WebhookRetryQueue")
    assert len(receiver.seen) == 1


def test_a_failing_endpoint_gets_the_same_webhook_id_until_it_answers_2xx(
    stack: LocalStack, receiver: Receiver
) -> None:
    endpoint, secret = WebhookStore().create_endpoint(
        "dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True
    )
    try:
        receiver.answers[:] = [500, 500]
        run_job(stack, prompt="a lighthouse for a flaky endpoint")
        first_tries(stack)
        notify(stack, "WebhookRetryQueue")
        notify(stack, "WebhookRetryQueue")
        assert len(receiver.seen) == 3
        ids = {headers["webhook-id"] for headers, _ in receiver.seen}
        assert len(ids) == 1
        for headers, body in receiver.seen:
            Webhook(secret).verify(body, headers)
        assert notify(stack, "WebhookRetryQueue") == []  # delivered: nothing more to send
    finally:
        WebhookStore().delete_endpoint("dev", endpoint.id)


def test_an_endpoint_answering_410_is_disabled(stack: LocalStack, receiver: Receiver) -> None:
    endpoint, _ = WebhookStore().create_endpoint(
        "dev", url=receiver.url, events=["job.succeeded", "job.failed"], description="", enabled=True
    )
    try:
        receiver.answers[:] = [410]
        run_job(stack, prompt="a lighthouse nobody listens to")
        first_tries(stack)
        disabled = WebhookStore().get_endpoint("dev", endpoint.id)
        assert disabled.enabled is False and "410" in (disabled.disabled_reason or "")
        assert notify(stack, "WebhookRetryQueue") == []
        run_job(stack, prompt="a second lighthouse")
        first_tries(stack)
        assert len(receiver.seen) == 1  # nothing more is sent to it
    finally:
        WebhookStore().delete_endpoint("dev", endpoint.id)


def test_a_completion_event_for_another_key_is_dropped(stack: LocalStack) -> None:
    body = json.dumps({"Records": [{"s3": {"object": {"key": "outputs/dev/job_x/0.png"}}}]})
    arn = stack.template.attributes["CompletionsQueue"]["Arn"]
    record = {"messageId": "m", "receiptHandle": "r", "body": body, "eventSourceARN": arn, "eventSource": "aws:sqs"}
    answer = stack.functions["NotifyFunction"].invoke({"Records": [{**record, "attributes": {}, "md5OfBody": "x"}]})
    assert answer["batchItemFailures"] == []


def test_deliveries_are_listed_and_a_redelivery_keeps_the_webhook_id(stack: LocalStack, receiver: Receiver) -> None:
    job_id = run_job(stack, prompt="a lighthouse sent twice", webhook_url=receiver.url)
    first_tries(stack)
    status, listing = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")
    assert status == 200
    (record,) = listing["data"]
    assert record["status"] == "delivered" and record["attempts"][0]["status"] == 200
    assert "secret" not in json.dumps(record)
    # Another tenant sees nothing of it
    assert call(stack, "GET", f"/v1/jobs/{job_id}/deliveries", tenant="dev-2")[0] == 404
    assert call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver", tenant="dev-2")[0] == 404
    # A redelivery on purpose sends the same event again, with the same webhook-id
    status, answer = call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")
    assert status == 202 and answer["redelivering_to"] == ["job"]
    notify(stack, "WebhookRetryQueue")
    assert len(receiver.seen) == 2
    assert receiver.seen[0][0]["webhook-id"] == receiver.seen[1][0]["webhook-id"] == record["webhook_id"]


def call(stack: LocalStack, method: str, path: str, tenant: str = "dev") -> tuple[int, Any]:
    event = http_event(method, path, api_key=stack.api_keys[tenant])
    response = stack.functions["ApiFunction"].invoke(event)
    return response["statusCode"], json.loads(response["body"])


def test_a_jobs_event_filter_keeps_unwanted_events_from_its_webhook_url(stack: LocalStack, receiver: Receiver) -> None:
    job_id = run_job(stack, prompt="a quiet lighthouse", webhook_url=receiver.url, webhook_events=["job.failed"])
    first_tries(stack)
    assert receiver.seen == []
    status, listing = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")
    assert status == 200 and listing["data"] == []


def test_a_retry_whose_message_was_lost_is_sent_again_by_the_next_message_that_finds_it(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a delivery whose retry was recorded but whose message never went out (SQS refused, the worker died)
    receiver.answers[:] = [500]
    job_id = run_job(stack, prompt="a lighthouse with a lost retry", webhook_url=receiver.url)
    notify(stack, "CompletionsQueue")
    with monkeypatch.context() as lost:
        lost.setattr(notify_module, "send_retry", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("SQS down")))
        notify(stack, "WebhookRetryQueue")  # the first try fails (500); its retry message is lost
    assert len(receiver.seen) == 1 and notify(stack, "WebhookRetryQueue") == []
    # When the job is redelivered later (or any copy of its messages arrives) once the retry is overdue
    monkeypatch.setattr(notify_module, "STALE_S", 0.0)
    status, answer = call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")
    assert status == 202 and answer["redelivering_to"] == ["job"]
    notify(stack, "WebhookRetryQueue")
    # Then the delivery goes on, with the same webhook-id
    assert len(receiver.seen) == 2 and receiver.seen[0][0]["webhook-id"] == receiver.seen[1][0]["webhook-id"]


def test_a_url_the_http_client_cannot_use_fails_its_own_delivery_only(stack: LocalStack, receiver: Receiver) -> None:
    WebhookStore().create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # A host Python's resolver accepts (IDNA 2003) and httpx refuses (IDNA 2008), registered before the guard knew
        WebhookStore().create_endpoint(
            "dev", url="https://\u2603.net/hook", events=["job.succeeded"], description="", enabled=True
        )
        run_job(stack, prompt="a lighthouse with one odd subscriber")
        first_tries(stack)
        assert len(receiver.seen) == 1  # the good endpoint got its event
    finally:
        for each in WebhookStore().list_endpoints("dev"):
            WebhookStore().delete_endpoint("dev", each.id)


def test_an_endpoint_failing_every_delivery_for_five_days_is_disabled(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[str] = []
    warned: list[dict[str, Any]] = []
    monkeypatch.setattr(notify_module.metrics, "add_metric", lambda **metric: counted.append(metric["name"]))
    monkeypatch.setattr(notify_module.logger, "warning", lambda message, extra=None: warned.append(extra or {}))
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given an endpoint whose deliveries have all failed since six days ago, the last an hour ago
        boto3.client("dynamodb").update_item(
            TableName=stack.template.attributes["WebhooksTable"]["Ref"],
            Key={"tenant": {"S": "dev"}, "item": {"S": f"endpoint#{endpoint.id}"}},
            UpdateExpression="SET failing_since = :then, breaker_until = :last",
            ExpressionAttributeValues={
                ":then": {"N": str(time.time() - 6 * 24 * 3600)},
                ":last": {"N": str(time.time() - 3600)},
            },
        )
        # When the next delivery fails too
        receiver.answers[:] = [503]
        run_job(stack, prompt="a lighthouse for a dead endpoint")
        first_tries(stack)
        # Then the endpoint is disabled, and says why
        disabled = store.get_endpoint("dev", endpoint.id)
        assert disabled.enabled is False and "5 days" in (disabled.disabled_reason or "")
        # and the operator hears of it
        assert "WebhookEndpointsDisabled" in counted
        assert {"tenant": "dev", "endpoint_id": endpoint.id} in [
            {k: v for k, v in extra.items() if k in ("tenant", "endpoint_id")} for extra in warned
        ]
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_a_success_resets_an_endpoints_failing_clock(stack: LocalStack, receiver: Receiver) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        receiver.answers[:] = [500]
        run_job(stack, prompt="a lighthouse that fails once")
        first_tries(stack)
        assert store.get_endpoint("dev", endpoint.id).failing_since is not None
        notify(stack, "WebhookRetryQueue")  # the retry succeeds
        assert store.get_endpoint("dev", endpoint.id).failing_since is None
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_at_send_time_the_guard_refuses_a_name_that_now_resolves_privately(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the production guard, and an endpoint whose name resolved publicly when it was registered but now
    # answers with the receiver's own loopback address (DNS rebinding)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
    aws.reset()
    port = receiver.server_address[1]
    real = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    store = WebhookStore()
    endpoint, _ = store.create_endpoint(
        "dev", url=f"http://hooks.rebind.example:{port}/hooks", events=["job.succeeded"], description="", enabled=True
    )
    try:
        monkeypatch.setattr(socket, "getaddrinfo", rebound)
        job_id = run_job(stack, prompt="a lighthouse for a rebinding host")
        first_tries(stack)
        # Then nothing reached the receiver, and the attempt says the subscriber could not be reached
        assert receiver.seen == []
        status, listing = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")
        (record,) = listing["data"]
        assert status == 200 and record["status"] == "retrying" and record["attempts"][0]["status"] is None
        assert "could not be reached" in record["attempts"][0]["error"]
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_a_retry_whose_message_was_refused_is_queued_when_the_message_of_its_try_comes_back(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first try that fails, whose retry (due in 10 minutes) is recorded but refused by SQS
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "0,600,600")
    aws.reset()
    receiver.answers[:] = [500]
    run_job(stack, prompt="a lighthouse whose retry SQS refused", webhook_url=receiver.url)
    notify(stack, "CompletionsQueue")
    (first,) = receive(stack, "WebhookRetryQueue", wait_s=1)
    boto3.client("sqs").delete_message(
        QueueUrl=queue_url(stack, "WebhookRetryQueue"), ReceiptHandle=first["ReceiptHandle"]
    )
    with monkeypatch.context() as refused:
        refused.setattr(notify_module, "send_retry", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("SQS down")))
        with pytest.raises(RuntimeError):
            notify_module.handle_retry_message(first["Body"])  # so its message stays on the queue
    assert len(receiver.seen) == 1
    # When SQS shows that message again, after the queue's visibility timeout (6 minutes)
    sent = Sent()
    monkeypatch.setattr(notify_module, "send_retry", sent)
    monkeypatch.setattr(notify_module, "time", Clock(365))
    notify_module.handle_retry_message(first["Body"])
    # Then the retry is queued, for when it was due rather than at once, and a further copy queues nothing more
    ((retry, delay_s),) = sent
    assert retry["attempt"] == 1 and 600 - 365 <= delay_s <= 660 - 365
    notify_module.handle_retry_message(first["Body"])
    assert len(sent) == 1 and len(receiver.seen) == 1
    # And when it comes due, the retry is made
    monkeypatch.setattr(notify_module, "time", Clock(700))
    notify_module.handle_retry_message(json.dumps(retry))
    assert len(receiver.seen) == 2 and receiver.seen[0][0]["webhook-id"] == receiver.seen[1][0]["webhook-id"]


def test_an_endpoints_retries_and_redeliveries_go_to_the_url_it_was_moved_to(
    stack: LocalStack, receiver: Receiver
) -> None:
    from tests.integration.test_webhook_endpoints import call as api

    moved = start_receiver()
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given a delivery whose first try failed at the endpoint's old url
        receiver.answers[:] = [500]
        job_id = run_job(stack, prompt="a lighthouse whose subscriber moved")
        first_tries(stack)
        # When the tenant moves the endpoint, then its retry is made and the job redelivered
        status, changed = api(stack, "PATCH", f"/v1/webhooks/endpoints/{endpoint.id}", {"url": moved.url})
        assert status == 200 and changed["url"] == moved.url
        notify(stack, "WebhookRetryQueue")
        assert call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")[1]["redelivering_to"] == [endpoint.id]
        notify(stack, "WebhookRetryQueue")
        # Then both went to the new url, and the delivery says so
        assert len(receiver.seen) == 1 and len(moved.seen) == 2
        (record,) = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")[1]["data"]
        assert record["url"] == moved.url and record["status"] == "delivered"
    finally:
        moved.shutdown()
        store.delete_endpoint("dev", endpoint.id)


def test_a_retry_of_an_event_the_endpoint_no_longer_takes_is_skipped(stack: LocalStack, receiver: Receiver) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given a delivery whose first try failed
        receiver.answers[:] = [500]
        job_id = run_job(stack, prompt="a lighthouse whose subscriber lost interest")
        first_tries(stack)
        # When the tenant's endpoint stops taking that event, before the retry
        store.update_endpoint("dev", endpoint.id, {"events": ["job.failed"]})
        notify(stack, "WebhookRetryQueue")
        # Then nothing more is sent, the delivery ends saying why, and a redelivery leaves it out
        assert len(receiver.seen) == 1
        (record,) = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")[1]["data"]
        assert record["status"] == "skipped" and "no longer takes job.succeeded" in record["attempts"][-1]["error"]
        status, answer = call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")
        assert status == 202 and answer["redelivering_to"] == [] and notify(stack, "WebhookRetryQueue") == []
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_a_redelivery_is_not_sent_to_a_disabled_or_deleted_endpoint(stack: LocalStack, receiver: Receiver) -> None:
    store = WebhookStore()
    kept, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    off, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    gone, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    try:
        # Given a job delivered to three endpoints, one since disabled and one since deleted
        job_id = run_job(stack, prompt="a lighthouse for three endpoints")
        first_tries(stack)
        assert len(receiver.seen) == 3
        store.disable_endpoint(off, "the endpoint answered 410 Gone")
        store.delete_endpoint("dev", gone.id)
        # When the job is redelivered
        status, answer = call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")
        notify(stack, "WebhookRetryQueue")
        # Then only the endpoint still on is named, and only it is sent to
        assert status == 202 and answer["redelivering_to"] == [kept.id] and len(receiver.seen) == 4
    finally:
        store.delete_endpoint("dev", kept.id)
        store.delete_endpoint("dev", off.id)


def test_a_redelivery_of_a_delivery_that_was_given_up_gets_the_whole_schedule_again(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a delivery that used its whole schedule (two tries) and was given up
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "0,0")
    aws.reset()
    receiver.answers[:] = [500, 500, 503, 200]
    job_id = run_job(stack, prompt="a lighthouse redelivered after an outage", webhook_url=receiver.url)
    first_tries(stack)
    notify(stack, "WebhookRetryQueue")
    assert len(receiver.seen) == 2
    assert call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")[1]["data"][0]["status"] == "failed"
    # When it is redelivered, and the redelivery's first try meets one more failure
    assert call(stack, "POST", f"/v1/jobs/{job_id}/deliveries/redeliver")[1]["redelivering_to"] == ["job"]
    notify(stack, "WebhookRetryQueue")
    assert len(receiver.seen) == 3
    # Then the redelivery goes on with its own schedule: its retry is made and delivers
    notify(stack, "WebhookRetryQueue")
    (record,) = call(stack, "GET", f"/v1/jobs/{job_id}/deliveries")[1]["data"]
    assert len(receiver.seen) == 4 and record["status"] == "delivered"
    # with the attempts numbered on from the first, and one webhook-id throughout
    assert [a["attempt"] for a in record["attempts"]] == [1, 2, 3, 4]
    assert len({headers["webhook-id"] for headers, _ in receiver.seen}) == 1


def test_the_schedules_first_entry_is_the_wait_before_the_first_try(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a schedule whose first entry holds the first try back two minutes
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "120,0")
    aws.reset()
    sent = Sent()
    monkeypatch.setattr(notify_module, "send_retry", sent)
    # When a job ends
    run_job(stack, prompt="a lighthouse in no hurry", webhook_url=receiver.url)
    notify(stack, "CompletionsQueue")
    # Then its first try's message is due two minutes on
    ((first, delay_s),) = sent
    assert first["attempt"] == 0 and 120 <= delay_s <= 132


def test_a_success_clears_a_failing_clock_started_after_the_endpoint_was_read(
    stack: LocalStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darkroom.webhooks import delivery

    store = WebhookStore()
    endpoint, _ = store.create_endpoint("dev", url=receiver.url, events=["job.succeeded"], description="", enabled=True)
    real_send = delivery.send

    def after_another_failure(*args: Any, **kwargs: Any) -> Any:
        store.mark_endpoint(store.get_endpoint("dev", endpoint.id), failing=True)  # another job's try, meanwhile
        return real_send(*args, **kwargs)

    try:
        # Given an endpoint read as healthy, whose failing clock another try starts while this one is on its way
        monkeypatch.setattr(delivery, "send", after_another_failure)
        run_job(stack, prompt="a lighthouse delivered during an outage")
        # When this try succeeds
        first_tries(stack)
        # Then the clock is stopped all the same
        assert len(receiver.seen) == 1 and store.get_endpoint("dev", endpoint.id).failing_since is None
    finally:
        store.delete_endpoint("dev", endpoint.id)
