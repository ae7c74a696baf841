"""Standard Webhooks signatures (https://www.standardwebhooks.com): what lets a subscriber trust a delivery.

Each delivery carries `webhook-id` (stable across retries of one event to one endpoint, so subscribers can drop
duplicates), `webhook-timestamp` (unix seconds) and `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>`
of `{id}.{timestamp}.{body}`, keyed with the bytes the secret's base64 part (after `whsec_`) decodes to. While a
rotated secret is still valid, a delivery carries one signature per secret, so a subscriber holding either verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
import time
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification allows 24 to 64
TOLERANCE_S = 300  # how far a timestamp may be from now when verifying, as the reference libraries use


class SignatureInvalid(Exception):
    """A delivery that does not verify: missing headers, an old or future timestamp, or no matching signature."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; ValueError for anything that is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret's key is 24 to 64 bytes")
    return key


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery, signed with every secret currently valid (newest first)."""
    if not secrets:
        raise ValueError("a delivery is signed with at least one secret")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, message_id, timestamp, body) for secret in secrets),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
    """What a subscriber does (darkroom's own `webhooks listen` receiver uses it): SignatureInvalid unless one of the
    delivery's signatures is this secret's and its timestamp is within TOLERANCE_S of now."""
    lowered = {name.lower(): value for name, value in received.items()}
    message_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    offered = lowered.get("webhook-signature", "")
    if not (message_id and stamp and offered):
        raise SignatureInvalid("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isascii() or not stamp.isdecimal() or len(stamp) > 12:
        raise SignatureInvalid("webhook-timestamp is not unix seconds")
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_S:
        raise SignatureInvalid("webhook-timestamp is too far from now")
    expected = signature(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered.split(" ")):
        raise SignatureInvalid("no signature matches the secret")
