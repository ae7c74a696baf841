"""Where a tenant's webhooks go, and the secrets they are signed with.

One DynamoDB table, keyed by tenant: the tenant's own secret (item `secret`), which signs deliveries to the
`webhook_url` of its jobs, and the endpoints it registered (items `endpoint#ep_...`), each with a secret of its own.
Secrets are stored sealed by KMS, with the tenant and the item as encryption context, so a sealed secret copied to
another tenant's item does not open; they appear in no log. A rotation keeps the previous secret valid for
ROTATION_OVERLAP_S, and deliveries meanwhile carry a signature for each.

An endpoint's item also keeps how its deliveries fare, for the notify function: when they started failing (an
endpoint failing for 5 days is disabled), and a circuit breaker. After BREAKER_AFTER_FAILURES failed tries in a row,
tries to it wait out a backoff window (doubling from BREAKER_FIRST_WINDOW_S to BREAKER_MAX_WINDOW_S) without being
sent, but for one probe per window, taken by a conditional write; a success closes it. So a subscriber that never
answers holds one try's slot per window, not one per delivery.
"""

from __future__ import annotations

import base64
import secrets as random_source
import time
from dataclasses import dataclass, field
from typing import Any

from darkroom import aws
from darkroom.errors import NotFound
from darkroom.ids import now_iso
from darkroom.settings import settings
from darkroom.webhooks import signing

ROTATION_OVERLAP_S = 24 * 3600
TENANT_SECRET = "secret"
ENDPOINT_PREFIX = "endpoint#"
ENDPOINT_COUNT = "endpoint_count"  # how many endpoints the tenant has, kept with them in one transaction
MAX_ENDPOINTS = 20  # per tenant: each one is a delivery per ended job
BREAKER_AFTER_FAILURES = 3
BREAKER_FIRST_WINDOW_S = 60.0
BREAKER_MAX_WINDOW_S = 900.0  # SQS's longest delay: a postponed try waits as one message
# A failure this long after the last one restarts the 5-day clock: retries fail at most 10 h apart while anything
# is being delivered, so a longer gap means nothing was sent, not that everything failed.
QUIET_RESTART_S = 86_400.0
PROBE_LEASE_S = 60.0  # longer than a try (15 s) and its bookkeeping; a probe whose worker died is taken again after it
# What a delivery's outcomes write on the endpoint; a new url starts afresh.
_HEALTH = ("failing_since", "failures", "breaker_until", "probe_of", "probe_until")


@dataclass
class Sealed:
    """A secret as stored: KMS ciphertext, and until when it signs (None: until rotated)."""

    ciphertext: str
    valid_until: float | None = None


@dataclass
class Endpoint:
    id: str
    tenant: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: str
    disabled_reason: str | None = None
    secrets: list[Sealed] = field(default_factory=list)
    # When deliveries to it started failing without a success since (None: the last one succeeded).
    failing_since: float | None = None
    failures: int = 0  # failed tries in a row
    breaker_until: float | None = None  # the end of the breaker's window, once failures reach BREAKER_AFTER_FAILURES
    probe_of: float | None = None  # the window (its breaker_until) whose probe is taken, and until when
    probe_until: float | None = None

    def breaker_open(self) -> bool:
        return self.failures >= BREAKER_AFTER_FAILURES and self.breaker_until is not None

    def public(self) -> dict[str, Any]:
        """As the API shows it: never a secret."""
        return {
            "id": self.id,
            "object": "webhook_endpoint",
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at,
        }


class TooManyEndpoints(Exception):
    pass


class RotationConflict(Exception):
    """Another rotation of the same secret won: the caller should read the secret and rotate again if needed."""


class WebhookStore:
    def __init__(self, table: str | None = None) -> None:
        self.table = table or settings().webhooks_table
        self.db = aws.client("dynamodb")

    # Endpoints

    def create_endpoint(
        self, tenant: str, *, url: str, events: list[str], description: str, enabled: bool
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret, shown this once (and again at its /secret). The tenant's endpoint count is
        written in the same transaction, conditional on staying within MAX_ENDPOINTS: parallel registrations cannot
        pass it."""
        endpoint_id = "ep_" + base64.b32encode(random_source.token_bytes(10)).decode().lower()
        secret = signing.new_secret()
        endpoint = Endpoint(
            id=endpoint_id,
            tenant=tenant,
            url=url,
            events=events,
            description=description,
            enabled=enabled,
            created_at=now_iso(),
            secrets=[self._seal(secret, tenant, ENDPOINT_PREFIX + endpoint_id)],
        )
        count = {
            "Update": {
                "TableName": self.table,
                "Key": {"tenant": {"S": tenant}, "item": {"S": ENDPOINT_COUNT}},
                "UpdateExpression": "ADD endpoints :one",
                "ConditionExpression": "attribute_not_exists(endpoints) OR endpoints < :max",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": str(MAX_ENDPOINTS)}},
            }
        }
        put = {
            "Put": {
                "TableName": self.table,
                "Item": _endpoint_item(endpoint),
                "ConditionExpression": "attribute_not_exists(tenant)",
            }
        }
        try:
            self.db.transact_write_items(TransactItems=[count, put], ClientRequestToken=endpoint_id)
        except Exception as exc:
            reasons = [r.get("Code", "") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
            if aws.error_code(exc) == "TransactionCanceledException" and reasons[:1] == ["ConditionalCheckFailed"]:
                raise TooManyEndpoints() from None
            raise
        return endpoint, secret

    def list_endpoints(self, tenant: str) -> list[Endpoint]:
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "tenant = :t AND begins_with(#i, :p)",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": {":t": {"S": tenant}, ":p": {"S": ENDPOINT_PREFIX}},
            "ConsistentRead": True,
        }
        found: list[Endpoint] = []
        while True:
            page = self.db.query(**query)
            found += [_endpoint(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        """Another tenant's endpoint is as missing as one that never existed."""
        item = None
        if endpoint_id.startswith("ep_") and len(endpoint_id) <= 40:
            key = {"tenant": {"S": tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint_id}}
            item = self.db.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        if item is None:
            raise NotFound(f"No webhook endpoint {endpoint_id}.")
        return _endpoint(item)

    def update_endpoint(self, tenant: str, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        """Change an endpoint's url, events, description or enabled flag; turning it on forgets why it was off, and
        turning it on or giving it a new url forgets its failures (the failing clock, the breaker)."""
        endpoint = self.get_endpoint(tenant, endpoint_id)
        values: dict[str, Any] = {}
        sets, removes = [], []
        for name, value in changes.items():
            if value is None:
                continue
            setattr(endpoint, name, value)
            values[f":{name}"] = (
                {"L": [{"S": e} for e in value]}
                if name == "events"
                else {"BOOL": value}
                if name == "enabled"
                else {"S": value}
            )
            sets.append(f"#{name} = :{name}")
        if changes.get("enabled") is True:
            removes.append("disabled_reason")
            endpoint.disabled_reason = None
        if changes.get("enabled") is True or changes.get("url") is not None:
            # Turned back on, or pointed at another subscriber: the failures so far say nothing about what comes next.
            removes += _HEALTH
            endpoint.failing_since, endpoint.failures, endpoint.breaker_until = None, 0, None
            endpoint.probe_of, endpoint.probe_until = None, None
        if not sets:
            return endpoint
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"tenant": {"S": tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint.id}},
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(tenant)",
                ExpressionAttributeNames={f"#{name}": name for name in changes if changes[name] is not None},
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            raise NotFound(f"No webhook endpoint {endpoint_id}.") from None  # deleted meanwhile
        return endpoint

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> None:
        self.get_endpoint(tenant, endpoint_id)
        key = {"tenant": {"S": tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint_id}}
        try:
            self.db.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": key,
                            "ConditionExpression": "attribute_exists(tenant)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"tenant": {"S": tenant}, "item": {"S": ENDPOINT_COUNT}},
                            "UpdateExpression": "ADD endpoints :minus",
                            "ExpressionAttributeValues": {":minus": {"N": "-1"}},
                        }
                    },
                ]
            )
        except Exception as exc:
            reasons = [r.get("Code", "") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
            # Only the endpoint's own condition means it is gone; a conflict on the shared count (a registration at
            # the same moment) is worth a retry, and the router answers it so.
            if aws.error_code(exc) == "TransactionCanceledException" and reasons[:1] == ["ConditionalCheckFailed"]:
                raise NotFound(f"No webhook endpoint {endpoint_id}.") from None  # deleted meanwhile
            raise

    def mark_endpoint(self, endpoint: Endpoint, *, failing: bool) -> Endpoint | None:
        """Note a try's outcome, and return the endpoint as it now is. A failure counts toward the breaker, opens or
        lengthens its window, and starts the failing clock if it is not running (or restarts it after a quiet spell:
        a failure days after the last one says nothing of the days between); a success stops both. Only while the
        endpoint still has the URL the try went to: None when it was moved or deleted meanwhile, so an answer from
        the old URL never counts against the new one."""
        key = {"tenant": {"S": endpoint.tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint.id}}
        same_url = {"ConditionExpression": "#url = :url", "ExpressionAttributeNames": {"#url": "url"}}
        try:
            if failing:
                now = time.time()
                # From the count read before the try: at worst a window one step short when tries overlap.
                doublings = min(10, max(0, endpoint.failures + 1 - BREAKER_AFTER_FAILURES))
                window = min(BREAKER_MAX_WINDOW_S, BREAKER_FIRST_WINDOW_S * 2**doublings)
                last_failure = endpoint.breaker_until or endpoint.failing_since  # the former is set by every failure
                quiet = last_failure is not None and now - last_failure > QUIET_RESTART_S
                since = ":now" if quiet else "if_not_exists(failing_since, :now)"
                item = self.db.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression=f"SET failing_since = {since}, breaker_until = :until ADD failures :one",
                    ExpressionAttributeValues={
                        ":now": {"N": str(now)},
                        ":until": {"N": str(now + window)},
                        ":one": {"N": "1"},
                        ":url": {"S": endpoint.url},
                    },
                    ReturnValues="ALL_NEW",
                    **same_url,
                )["Attributes"]
                return _endpoint(item)
            # Whatever was read before the try: another try may have failed since.
            self.db.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="REMOVE " + ", ".join(_HEALTH),
                ExpressionAttributeValues={":url": {"S": endpoint.url}},
                **same_url,
            )
            endpoint.failing_since, endpoint.failures, endpoint.breaker_until = None, 0, None
            endpoint.probe_of, endpoint.probe_until = None, None
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return endpoint

    def take_probe(self, endpoint: Endpoint) -> bool:
        """The one try of the breaker's current window, for PROBE_LEASE_S: False if another worker has it, or the
        window changed since the endpoint was read."""
        now = time.time()
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"tenant": {"S": endpoint.tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint.id}},
                UpdateExpression="SET probe_of = :window, probe_until = :lease",
                ConditionExpression="breaker_until = :window "
                "AND (attribute_not_exists(probe_of) OR probe_of <> :window OR probe_until < :now)",
                ExpressionAttributeValues={
                    ":window": {"N": str(endpoint.breaker_until)},
                    ":lease": {"N": str(now + PROBE_LEASE_S)},
                    ":now": {"N": str(now)},
                },
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        endpoint.probe_of, endpoint.probe_until = endpoint.breaker_until, now + PROBE_LEASE_S
        return True

    def release_probe(self, endpoint: Endpoint) -> None:
        """A probe taken for a try that turned out not to be this worker's: another may take it at once."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"tenant": {"S": endpoint.tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint.id}},
                UpdateExpression="REMOVE probe_of, probe_until",
                ConditionExpression="probe_until = :mine",
                ExpressionAttributeValues={":mine": {"N": str(endpoint.probe_until)}},
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise

    def disable_endpoint(self, endpoint: Endpoint, reason: str) -> bool:
        """Turn an endpoint off, saying why; False if the tenant deleted it or moved it to another URL meanwhile."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"tenant": {"S": endpoint.tenant}, "item": {"S": ENDPOINT_PREFIX + endpoint.id}},
                UpdateExpression="SET enabled = :off, disabled_reason = :why",
                ConditionExpression="#url = :url",
                ExpressionAttributeNames={"#url": "url"},
                ExpressionAttributeValues={":off": {"BOOL": False}, ":why": {"S": reason}, ":url": {"S": endpoint.url}},
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        endpoint.enabled, endpoint.disabled_reason = False, reason
        return True

    def endpoint_secrets(self, endpoint: Endpoint) -> list[str]:
        """The endpoint's valid secrets, newest first."""
        return self._open_all(endpoint.secrets, endpoint.tenant, ENDPOINT_PREFIX + endpoint.id)

    def rotate_endpoint(self, tenant: str, endpoint_id: str) -> str:
        endpoint = self.get_endpoint(tenant, endpoint_id)
        try:
            return self._rotate(tenant, ENDPOINT_PREFIX + endpoint.id, endpoint.secrets)
        except RotationConflict:
            self.get_endpoint(tenant, endpoint_id)  # a delete, not a rotation, got there first: NotFound
            raise

    # The tenant's own secret, for jobs' webhook_url

    def tenant_secrets(self, tenant: str) -> list[str]:
        """The tenant's valid secrets, newest first; made on first use."""
        sealed = self._sealed_tenant_secrets(tenant)
        if not sealed:
            secret = signing.new_secret()
            item = {
                "tenant": {"S": tenant},
                "item": {"S": TENANT_SECRET},
                "secrets": _sealed_attribute([self._seal(secret, tenant, TENANT_SECRET)]),
            }
            try:
                self.db.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(tenant)")
            except Exception as exc:
                if aws.error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return self.tenant_secrets(tenant)  # made meanwhile by another request: that one is the secret
            return [secret]
        return self._open_all(sealed, tenant, TENANT_SECRET)

    def rotate_tenant_secret(self, tenant: str) -> str:
        self.tenant_secrets(tenant)
        return self._rotate(tenant, TENANT_SECRET, self._sealed_tenant_secrets(tenant))

    # Sealing

    def _rotate(self, tenant: str, item: str, current: list[Sealed]) -> str:
        """A new secret first; the newest of the current ones stays valid for ROTATION_OVERLAP_S, older ones end."""
        secret = signing.new_secret()
        now = time.time()
        kept = [
            Sealed(s.ciphertext, min(s.valid_until or now + ROTATION_OVERLAP_S, now + ROTATION_OVERLAP_S))
            for s in current[:1]
            if s.valid_until is None or s.valid_until > now
        ]
        sealed = [self._seal(secret, tenant, item), *kept]
        try:
            # Compare-and-set on the secrets it read: of two rotations at once, one wins and the other is told so,
            # rather than handing out a secret the winner overwrote.
            self.db.update_item(
                TableName=self.table,
                Key={"tenant": {"S": tenant}, "item": {"S": item}},
                UpdateExpression="SET secrets = :s",
                ConditionExpression="attribute_exists(tenant) AND secrets = :read",
                ExpressionAttributeValues={":s": _sealed_attribute(sealed), ":read": _sealed_attribute(current)},
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            raise RotationConflict() from None
        return secret

    def _sealed_tenant_secrets(self, tenant: str) -> list[Sealed]:
        key = {"tenant": {"S": tenant}, "item": {"S": TENANT_SECRET}}
        item = self.db.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        return _sealed_list(item["secrets"]) if item else []

    def _seal(self, secret: str, tenant: str, item: str) -> Sealed:
        blob = aws.client("kms").encrypt(
            KeyId=settings().webhook_secrets_key,
            Plaintext=secret.encode(),
            EncryptionContext={"tenant": tenant, "item": item},
        )["CiphertextBlob"]
        return Sealed(base64.b64encode(blob).decode())

    def _open_all(self, sealed: list[Sealed], tenant: str, item: str) -> list[str]:
        now = time.time()
        kms = aws.client("kms")
        return [
            kms.decrypt(
                CiphertextBlob=base64.b64decode(s.ciphertext),
                EncryptionContext={"tenant": tenant, "item": item},
            )["Plaintext"].decode()
            for s in sealed
            if s.valid_until is None or s.valid_until > now
        ]


def _sealed_attribute(sealed: list[Sealed]) -> dict[str, Any]:
    return {
        "L": [
            {
                "M": {
                    "ciphertext": {"S": s.ciphertext},
                    **({"valid_until": {"N": str(s.valid_until)}} if s.valid_until else {}),
                }
            }
            for s in sealed
        ]
    }


def _sealed_list(attribute: dict[str, Any]) -> list[Sealed]:
    return [
        Sealed(
            entry["M"]["ciphertext"]["S"],
            float(entry["M"]["valid_until"]["N"]) if "valid_until" in entry["M"] else None,
        )
        for entry in attribute.get("L", [])
    ]


def _endpoint_item(endpoint: Endpoint) -> dict[str, Any]:
    item: dict[str, Any] = {
        "tenant": {"S": endpoint.tenant},
        "item": {"S": ENDPOINT_PREFIX + endpoint.id},
        "url": {"S": endpoint.url},
        "events": {"L": [{"S": e} for e in endpoint.events]},
        "description": {"S": endpoint.description},
        "enabled": {"BOOL": endpoint.enabled},
        "created_at": {"S": endpoint.created_at},
        "secrets": _sealed_attribute(endpoint.secrets),
    }
    if endpoint.disabled_reason:
        item["disabled_reason"] = {"S": endpoint.disabled_reason}
    return item


def _endpoint(item: dict[str, Any]) -> Endpoint:
    return Endpoint(
        id=item["item"]["S"][len(ENDPOINT_PREFIX) :],
        tenant=item["tenant"]["S"],
        url=item["url"]["S"],
        events=[e["S"] for e in item.get("events", {}).get("L", [])],
        description=item.get("description", {}).get("S", ""),
        enabled=item.get("enabled", {}).get("BOOL", True),
        created_at=item["created_at"]["S"],
        disabled_reason=item.get("disabled_reason", {}).get("S"),
        secrets=_sealed_list(item.get("secrets", {})),
        failing_since=_number(item, "failing_since"),
        failures=int(item.get("failures", {"N": "0"})["N"]),
        breaker_until=_number(item, "breaker_until"),
        probe_of=_number(item, "probe_of"),
        probe_until=_number(item, "probe_until"),
    )


def _number(item: dict[str, Any], name: str) -> float | None:
    return float(item[name]["N"]) if name in item else None
