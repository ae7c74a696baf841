"""`Idempotency-Key`: one key, one job, per tenant, for 24 hours.

The key's record is written in the same DynamoDB transaction as the job it names (see JobStore.create), so there is
no moment at which one exists without the other: a request killed half way leaves either nothing (a retry creates
the job) or both (a retry finds it). Powertools' idempotency utility writes its record apart from the work it
guards, which leaves that gap open (see docs/decisions.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from darkroom import aws
from darkroom.errors import DarkroomError, FieldError, InvalidRequest
from darkroom.settings import settings

TTL_S = 24 * 3600
HEADER = "idempotency-key"
MAX_KEY_CHARS = 255


class IdempotencyKeyReused(DarkroomError):
    status = 422
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        message = "This Idempotency-Key was used with a different request; use a new key for a new request."
        super().__init__(message, [FieldError("Idempotency-Key", "idempotency_key_reused", message)])


class IdempotencyKeyInProgress(DarkroomError):
    """The first request with this key is still being accepted: answer soon, with the same job."""

    status = 409
    code = "idempotency_key_in_progress"

    def __init__(self) -> None:
        super().__init__("The first request with this Idempotency-Key is still being accepted; retry in a second.")

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


@dataclass(frozen=True)
class IdempotencyKey:
    tenant: str
    key: str
    fingerprint: str

    @property
    def record_key(self) -> str:
        # Hashed: bounded length, and no client-chosen text stored as a key.
        return f"{self.tenant}#{hashlib.sha256(self.key.encode()).hexdigest()}"

    def put_item(self, job_id: str) -> dict[str, Any]:
        """The transaction item that claims this key for `job_id`, unless a live claim exists."""
        now = time.time()
        return {
            "Put": {
                "TableName": settings().idempotency_table,
                "Item": {
                    "key": {"S": self.record_key},
                    "job_id": {"S": job_id},
                    "fingerprint": {"S": self.fingerprint},
                    "expires_at": {"N": str(int(now + TTL_S))},
                },
                # DynamoDB's TTL deletes up to days late: an expired record counts as absent.
                "ConditionExpression": "attribute_not_exists(#k) OR expires_at < :now",
                "ExpressionAttributeNames": {"#k": "key"},
                "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
            }
        }

    def delete_item(self, job_id: str) -> dict[str, Any]:
        """The transaction item that releases this key along with its withdrawn job."""
        return {
            "Delete": {
                "TableName": settings().idempotency_table,
                "Key": {"key": {"S": self.record_key}},
                "ConditionExpression": "job_id = :job",
                "ExpressionAttributeValues": {":job": {"S": job_id}},
            }
        }

    def claimed_job(self) -> str | None:
        """The job this key names now, checking that it was asked for with the same request."""
        item = (
            aws.client("dynamodb")
            .get_item(TableName=settings().idempotency_table, Key={"key": {"S": self.record_key}}, ConsistentRead=True)
            .get("Item")
        )
        if not item or int(item["expires_at"]["N"]) < time.time():
            return None
        if item["fingerprint"]["S"] != self.fingerprint:
            raise IdempotencyKeyReused()
        return str(item["job_id"]["S"])


def from_request(tenant: str, headers: dict[str, str], route: str, body: Any) -> IdempotencyKey | None:
    """The request's key, if it sent one. Two requests are the same when their route and decoded JSON are."""
    key = headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters.",
            field="Idempotency-Key",
            rule="idempotency_key_invalid",
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fingerprint = hashlib.sha256(f"{route}\n{canonical}".encode(errors="surrogatepass")).hexdigest()
    return IdempotencyKey(tenant, key, fingerprint)
