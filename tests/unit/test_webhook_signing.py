"""Standard Webhooks signing, checked against the reference `standardwebhooks` package a subscriber would use."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from darkroom.webhooks import signing

BODY = b'{"type":"job.succeeded","timestamp":"2026-11-23T12:00:00Z","data":{"id":"job_x"}}'


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(signing.secret_key(secret)) == 32
    assert secret != signing.new_secret()


def test_the_reference_package_verifies_darkrooms_signature() -> None:
    secret, now = signing.new_secret(), int(time.time())
    headers = signing.headers([secret], "msg_123", now, BODY)
    assert Webhook(secret).verify(BODY, headers)["data"]["id"] == "job_x"


def test_darkroom_and_the_reference_package_agree_on_a_fixed_vector() -> None:
    # The specification's own example secret and message
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    stamp = 1614265330
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", stamp, body) == expected
    moment = datetime.fromtimestamp(stamp, UTC)
    assert Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", moment, body.decode()) == expected


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new, now = signing.new_secret(), signing.new_secret(), int(time.time())
    headers = signing.headers([new, old], "msg_1", now, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
        signing.verify(secret, headers, BODY)


def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    secret, now = signing.new_secret(), int(time.time())
    headers = signing.headers([secret], "msg_1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(signing.new_secret(), headers, BODY)
    with pytest.raises(signing.SignatureInvalid, match="too far"):
        signing.verify(secret, headers, BODY, now=now + 301)


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "sk_abc", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_only_real_secrets_are_accepted(secret: str) -> None:
    with pytest.raises(ValueError):
        signing.secret_key(secret)
