"""Webhook endpoints and signing secrets through the api function, against moto (DynamoDB and KMS)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from standardwebhooks.webhooks import Webhook

from darkroom import aws
from darkroom.webhooks import signing
from darkroom.webhooks.endpoints import WebhookStore
from darkroom_local.stack import LocalStack
from tests.support import http_event, response_json


def call(stack: LocalStack, method: str, path: str, body: Any = None, tenant: str = "dev") -> tuple[int, Any]:
    event = http_event(method, path, api_key=stack.api_keys[tenant], body=body)
    response = stack.functions["ApiFunction"].invoke(event)
    return response["statusCode"], response_json(response)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The production SSRF guard, as in AWS (the local stack lets receivers on 127.0.0.1 through)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
    aws.reset()
    yield
    monkeypatch.undo()
    aws.reset()


def test_an_endpoint_is_created_with_a_secret_that_is_stored_sealed(stack: LocalStack) -> None:
    status, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/hooks"})
    assert status == 201, created
    assert created["secret"].startswith("whsec_") and created["events"] == [
        "job.succeeded",
        "job.failed",
        "job.canceled",
    ]
    # Readable again, and never in a listing
    status, secret = call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}/secret")
    assert status == 200 and secret["secret"] == created["secret"]
    status, listing = call(stack, "GET", "/v1/webhooks/endpoints")
    assert [e["id"] for e in listing["data"]] == [created["id"]] and "secret" not in listing["data"][0]
    # Stored as KMS ciphertext, never the secret itself
    table = stack.template.attributes["WebhooksTable"]["Ref"]
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    assert created["secret"] not in str(items) and created["secret"][6:] not in str(items)
    call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")


def test_a_rotation_keeps_the_old_secret_signing_for_a_day(stack: LocalStack) -> None:
    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/a"})
    status, rotated = call(stack, "POST", f"/v1/webhooks/endpoints/{created['id']}/rotate")
    assert status == 200 and rotated["secret"] != created["secret"]
    _, secrets = call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}/secret")
    assert secrets["valid_secrets"] == [rotated["secret"], created["secret"]]
    # A delivery signed with both verifies with either, by the reference package
    headers = signing.headers(secrets["valid_secrets"], "msg_1", int(time.time()), b"{}")
    for secret in (created["secret"], rotated["secret"]):
        Webhook(secret).verify(b"{}", headers)
    # A second rotation ends the first secret at once
    call(stack, "POST", f"/v1/webhooks/endpoints/{created['id']}/rotate")
    _, secrets = call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}/secret")
    assert len(secrets["valid_secrets"]) == 2 and created["secret"] not in secrets["valid_secrets"]
    call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")


def test_the_tenant_secret_is_made_once_and_rotates(stack: LocalStack) -> None:
    _, first = call(stack, "GET", "/v1/webhooks/secret", tenant="dev-2")
    _, again = call(stack, "GET", "/v1/webhooks/secret", tenant="dev-2")
    assert first["secret"] == again["secret"]
    _, rotated = call(stack, "POST", "/v1/webhooks/secret/rotate", tenant="dev-2")
    _, now = call(stack, "GET", "/v1/webhooks/secret", tenant="dev-2")
    assert now["valid_secrets"] == [rotated["secret"], first["secret"]]
    assert WebhookStore().tenant_secrets("dev") != now["valid_secrets"]  # each tenant its own


def test_another_tenants_endpoint_is_a_404(stack: LocalStack) -> None:
    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/mine"})
    for method, suffix in (("GET", ""), ("GET", "/secret"), ("POST", "/rotate"), ("DELETE", "")):
        status, body = call(stack, method, f"/v1/webhooks/endpoints/{created['id']}{suffix}", tenant="dev-2")
        assert status == 404, (method, suffix, body)
    call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")
    assert call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}")[0] == 404


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"url": "https://169.254.169.254/latest/"}, "url", "url_not_allowed"),
        ({"url": "http://[::ffff:127.0.0.1]/"}, "url", "url_not_allowed"),
        ({"url": "http://2130706433/"}, "url", "url_not_allowed"),
        ({"url": "http://0x7f.1/"}, "url", "url_not_allowed"),
        ({"url": "https://10.0.0.1/"}, "url", "url_not_allowed"),
        ({"url": "https://hooks.example.com/", "events": ["job.exploded"]}, "events.0", "literal_error"),
        ({"url": "https://hooks.example.com/", "events": []}, "events", "too_short"),
        ({"url": "https://hooks.example.com/", "secret": "whsec_mine"}, "secret", "extra_forbidden"),
    ],
)
def test_registrations_the_guard_or_the_rules_refuse_are_422s_naming_the_field(
    stack: LocalStack, guarded: None, body: dict[str, Any], field: str, rule: str
) -> None:
    status, answer = call(stack, "POST", "/v1/webhooks/endpoints", body)
    assert status == 422, answer
    assert {(f["field"], f["rule"]) for f in answer["error"]["fields"]} == {(field, rule)}


def test_a_job_webhook_url_the_guard_refuses_is_a_422_at_submission(stack: LocalStack, guarded: None) -> None:
    body = {"prompt": "a cat", "webhook_url": "http://169.254.169.254/"}
    status, answer = call(stack, "POST", "/v1/images/generations", body)
    assert status == 422 and answer["error"]["fields"][0]["rule"] == "webhook_url_not_allowed"


def test_of_two_rotations_at_once_one_wins_and_the_other_is_told(stack: LocalStack) -> None:
    from darkroom.webhooks.endpoints import ENDPOINT_PREFIX, RotationConflict

    store = WebhookStore()
    endpoint, _ = store.create_endpoint(
        "dev", url="http://127.0.0.1:9000/r", events=["job.failed"], description="", enabled=True
    )
    try:
        stale = store.get_endpoint("dev", endpoint.id).secrets  # both rotations read this
        store.rotate_endpoint("dev", endpoint.id)  # the first one writes
        with pytest.raises(RotationConflict):
            store._rotate("dev", ENDPOINT_PREFIX + endpoint.id, stale)  # the second one finds the secrets changed
        # Every secret handed out still verifies: the first rotation's is the newest
        assert len(store.endpoint_secrets(store.get_endpoint("dev", endpoint.id))) == 2
    finally:
        store.delete_endpoint("dev", endpoint.id)


def test_a_disabled_endpoint_is_turned_back_on_and_edited(stack: LocalStack) -> None:
    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/p"})
    store = WebhookStore()
    store.disable_endpoint(store.get_endpoint("dev", created["id"]), "the endpoint answered 410 Gone")
    status, changed = call(
        stack, "PATCH", f"/v1/webhooks/endpoints/{created['id']}", {"enabled": True, "events": ["job.failed"]}
    )
    assert status == 200, changed
    assert changed["enabled"] is True and changed["disabled_reason"] is None and changed["events"] == ["job.failed"]
    assert call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}")[1]["events"] == ["job.failed"]
    # Another tenant cannot, and bad changes are 422s naming the field
    assert call(stack, "PATCH", f"/v1/webhooks/endpoints/{created['id']}", {"enabled": False}, tenant="dev-2")[0] == 404
    status, answer = call(stack, "PATCH", f"/v1/webhooks/endpoints/{created['id']}", {"secret": "whsec_x"})
    assert status == 422 and answer["error"]["fields"][0]["field"] == "secret"
    status, answer = call(stack, "PATCH", f"/v1/webhooks/endpoints/{created['id']}", {"url": "http://0x7f.1/"})
    assert status == 422 and answer["error"]["fields"][0]["rule"] == "url_not_allowed"
    call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")


def test_parallel_registrations_cannot_pass_the_endpoint_cap(stack: LocalStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from darkroom.webhooks.endpoints import MAX_ENDPOINTS, TooManyEndpoints

    store = WebhookStore()

    def register(i: int) -> bool:
        try:
            store.create_endpoint(
                "cap-test", url=f"http://127.0.0.1:9000/{i}", events=["job.failed"], description="", enabled=True
            )
        except TooManyEndpoints:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        made = sum(pool.map(register, range(MAX_ENDPOINTS + 10)))
    assert made == MAX_ENDPOINTS == len(store.list_endpoints("cap-test"))
    # Deleting one makes room for exactly one more
    store.delete_endpoint("cap-test", store.list_endpoints("cap-test")[0].id)
    assert register(100) is True and register(101) is False
    for endpoint in store.list_endpoints("cap-test"):
        store.delete_endpoint("cap-test", endpoint.id)
    assert register(102) is True


DONE_WHEN_URLS = [
    "http://169.254.169.254/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://internal.darkroom-test.example/",  # resolves to 10.0.0.1
]


@pytest.fixture
def internal_name(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "internal.darkroom-test.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.parametrize("url", DONE_WHEN_URLS)
def test_the_production_guard_refuses_each_example_at_registration_submission_and_send_time(
    stack: LocalStack, guarded: None, internal_name: None, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from darkroom.webhooks import delivery

    monkeypatch.setenv("ALLOW_HTTP_WEBHOOKS", "true")  # plain http, so the guard alone refuses
    aws.reset()
    status, answer = call(stack, "POST", "/v1/webhooks/endpoints", {"url": url})
    assert status == 422 and answer["error"]["fields"][0]["rule"] == "url_not_allowed", answer
    status, answer = call(stack, "POST", "/v1/images/generations", {"prompt": "a cat", "webhook_url": url})
    assert status == 422 and answer["error"]["fields"][0]["rule"] == "webhook_url_not_allowed", answer
    attempt = delivery.send(url, b"{}", {}, allow_http=True, allow_private=False)
    assert attempt.outcome == "failed" and attempt.status is None, attempt


@pytest.mark.parametrize(
    ("events", "rule"),
    [
        (["job.failed"] * 40_000, "too_long"),
        (["job.succeeded", "job.failed", "job.canceled", "job.progress", "job.failed"], "too_long"),
        (["job.failed", "job.succeeded", "job.failed"], "events_repeated"),
    ],
)
def test_an_events_list_longer_than_the_events_or_with_repeats_is_a_422(
    stack: LocalStack, events: list[str], rule: str
) -> None:
    # Given an endpoint
    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/events"})
    try:
        # When an events list repeats itself, on registration or on a change
        for method, path in (("POST", "/v1/webhooks/endpoints"), ("PATCH", f"/v1/webhooks/endpoints/{created['id']}")):
            status, answer = call(stack, method, path, {"url": "http://127.0.0.1:9000/events", "events": events})
            # Then it is refused, naming the field and the rule, and nothing is stored
            assert status == 422, (method, answer)
            assert [(f["field"], f["rule"]) for f in answer["error"]["fields"]] == [("events", rule)]
        assert call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}")[1]["events"] == created["events"]
    finally:
        call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")


def test_a_delete_that_conflicts_with_a_registration_is_a_503_to_retry_not_a_404(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/busy"})

    def conflict(**kwargs: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "[None, TransactionConflict]"},
                "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
            },
            "TransactWriteItems",
        )

    try:
        # Given a registration writing the tenant's endpoint count at the same moment as a delete
        with monkeypatch.context() as busy:
            busy.setattr(aws.client("dynamodb"), "transact_write_items", conflict)
            # When the delete's transaction is cancelled for it
            status, answer = call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")
        # Then the caller is told to retry, and the endpoint is still there
        assert status == 503, answer
        assert call(stack, "GET", f"/v1/webhooks/endpoints/{created['id']}")[0] == 200
    finally:
        assert call(stack, "DELETE", f"/v1/webhooks/endpoints/{created['id']}")[0] == 200


@pytest.mark.parametrize(("method", "suffix", "body"), [("PATCH", "", {"enabled": False}), ("POST", "/rotate", None)])
def test_a_change_or_rotation_racing_a_delete_is_a_404(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, method: str, suffix: str, body: Any
) -> None:
    _, created = call(stack, "POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9000/racing"})
    real_get = WebhookStore.get_endpoint
    deleted: list[str] = []

    def read_then_deleted(self: WebhookStore, tenant: str, endpoint_id: str) -> Any:
        endpoint = real_get(self, tenant, endpoint_id)
        if not deleted:  # the delete lands between this request's read and its write
            deleted.append(endpoint_id)
            WebhookStore().delete_endpoint(tenant, endpoint_id)
        return endpoint

    # Given an endpoint deleted while a change or rotation of it is under way
    monkeypatch.setattr(WebhookStore, "get_endpoint", read_then_deleted)
    # When that request writes
    status, answer = call(stack, method, f"/v1/webhooks/endpoints/{created['id']}{suffix}", body)
    # Then it is told the endpoint is gone
    assert status == 404 and answer["error"]["code"] == "not_found", answer


@pytest.mark.parametrize("change", [{"url": "http://127.0.0.1:9000/new"}, {"enabled": True}])
def test_a_new_url_or_turning_it_back_on_starts_an_endpoint_afresh(stack: LocalStack, change: dict[str, Any]) -> None:
    store = WebhookStore()
    endpoint, _ = store.create_endpoint(
        "dev", url="http://127.0.0.1:9000/old", events=["job.failed"], description="", enabled=True
    )
    try:
        # Given an endpoint whose deliveries have failed often enough to open its breaker
        for _ in range(4):
            marked = store.mark_endpoint(endpoint, failing=True)
            assert marked is not None
            endpoint = marked
        assert endpoint.failing_since and endpoint.breaker_open()
        # When the tenant points it elsewhere, or turns it (back) on
        status, _ = call(stack, "PATCH", f"/v1/webhooks/endpoints/{endpoint.id}", change)
        # Then the old failures count against it no more
        changed = store.get_endpoint("dev", endpoint.id)
        assert status == 200 and changed.failing_since is None and changed.failures == 0 and not changed.breaker_open()
    finally:
        store.delete_endpoint("dev", endpoint.id)
