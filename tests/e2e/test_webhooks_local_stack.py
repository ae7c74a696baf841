"""Webhooks end to end through the local stack over HTTP: S3's manifest event, the completions queue, the notify
function and the retry queue, all wired from template.yaml, delivering to receivers on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from darkroom_local.stack import LocalStack
from darkroom_local.webhook_listener import WebhookListener
from tests.e2e.served import api_client, served_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack(parameters={"WebhookRetryScheduleSeconds": "0,1,1"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(running: LocalStack) -> Iterator[httpx.Client]:
    with api_client(running) as http:
        yield http


class Scripted(http.server.ThreadingHTTPServer):
    """A subscriber that answers from a script (then 200), and keeps what it was sent."""

    def __init__(self, answers: list[int]) -> None:
        self.answers, self.seen = list(answers), []  # type: list[int], list[tuple[dict[str, str], bytes]]
        super().__init__(("127.0.0.1", 0), _Scripted)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class _Scripted(http.server.BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:
        self.server.seen.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(self.server.answers.pop(0) if self.server.answers else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def wait_for(condition: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_succeeded_and_a_failed_job_each_get_one_verified_delivery(client: httpx.Client) -> None:
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    with WebhookListener(0, secret, show=lambda line: None) as listener:
        threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        ok = client.post("/v1/images/generations", json={"prompt": "a hooked cat", "webhook_url": listener.url})
        refused = client.post("/v1/images/generations", json={"prompt": "[refuse] x", "webhook_url": listener.url})
        wait_for(lambda: len(listener.received) >= 2)
        time.sleep(2)  # room for a duplicate to show up
        listener.shutdown()
    kinds = {event["data"]["id"]: event["type"] for event in listener.received}
    assert kinds == {ok.json()["id"]: "job.succeeded", refused.json()["id"]: "job.failed"}
    assert len(listener.received) == 2


def test_a_receiver_answering_500_twice_gets_the_same_webhook_id_three_times(client: httpx.Client) -> None:
    subscriber = Scripted([500, 500])
    created = client.post("/v1/webhooks/endpoints", json={"url": subscriber.url}).json()
    try:
        client.post("/v1/images/generations", json={"prompt": "a cat for a flaky subscriber"})
        wait_for(lambda: len(subscriber.seen) >= 3)
        assert len({headers["webhook-id"] for headers, _ in subscriber.seen}) == 1
        for headers, body in subscriber.seen:
            Webhook(created["secret"]).verify(body, headers)
    finally:
        client.delete(f"/v1/webhooks/endpoints/{created['id']}")
        subscriber.shutdown()


def test_a_receiver_answering_410_is_disabled(client: httpx.Client) -> None:
    subscriber = Scripted([410])
    created = client.post("/v1/webhooks/endpoints", json={"url": subscriber.url}).json()
    try:
        client.post("/v1/images/generations", json={"prompt": "a cat nobody wants"})
        wait_for(lambda: client.get(f"/v1/webhooks/endpoints/{created['id']}").json()["enabled"] is False)
        assert "410" in client.get(f"/v1/webhooks/endpoints/{created['id']}").json()["disabled_reason"]
    finally:
        client.delete(f"/v1/webhooks/endpoints/{created['id']}")
        subscriber.shutdown()
