"""API keys: each maps to one tenant and is stored only as its SHA-256.

Keys are 256-bit random tokens, so a plain hash is as good as a slow one and keeps lookups to one GetItem.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from darkroom import aws
from darkroom.errors import Unauthorized
from darkroom.ids import now_iso
from darkroom.settings import settings

KEY_PREFIX = "dr_"
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_KEY_CHARS = 256
# A revoked key stops working within this many seconds on a warm function.
CACHE_TTL_S = 60.0

_cache: dict[str, tuple[float, str]] = {}
_cache_lock = threading.Lock()


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_id(key_hash: str) -> str:
    """A key's public name: enough of its hash to tell keys apart, nothing that helps guess the key."""
    return "key_" + key_hash[:16]


def create_api_key(tenant: str, *, api_key: str | None = None, name: str = "") -> str:
    """Store a key for `tenant` and return it: the only time the clear key exists outside its owner."""
    if not TENANT_PATTERN.match(tenant):
        raise ValueError("tenant must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
    api_key = api_key or new_api_key()
    aws.client("dynamodb").put_item(
        TableName=settings().api_keys_table,
        Item={
            "key_hash": {"S": hash_key(api_key)},
            "tenant": {"S": tenant},
            "name": {"S": name},
            "created_at": {"S": now_iso()},
        },
    )
    return api_key


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant: str
    name: str
    created_at: str
    revoked_at: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {**self.__dict__, "status": "revoked" if self.revoked_at else "active"}


def list_api_keys(tenant: str | None = None) -> list[ApiKeyRecord]:
    """Every key (an operator's tool, so a scan of the small keys table), oldest first; never a hash or a key."""
    records = []
    pages = aws.client("dynamodb").get_paginator("scan").paginate(TableName=settings().api_keys_table)
    for page in pages:
        for item in page.get("Items", []):
            if tenant and item["tenant"]["S"] != tenant:
                continue
            records.append(
                ApiKeyRecord(
                    id=key_id(item["key_hash"]["S"]),
                    tenant=item["tenant"]["S"],
                    name=item.get("name", {}).get("S", ""),
                    created_at=item.get("created_at", {}).get("S", ""),
                    revoked_at=item.get("revoked_at", {}).get("S"),
                )
            )
    return sorted(records, key=lambda record: record.created_at)


def revoke_api_key(api_key_id: str) -> ApiKeyRecord:
    """Disable a key by its id; kept, not deleted, so its history stays readable. Warm functions stop accepting it
    within CACHE_TTL_S. KeyError when no key has that id."""
    for page in aws.client("dynamodb").get_paginator("scan").paginate(TableName=settings().api_keys_table):
        for item in page.get("Items", []):
            if key_id(item["key_hash"]["S"]) == api_key_id:
                revoked_at = item.get("revoked_at", {}).get("S") or now_iso()
                aws.client("dynamodb").update_item(
                    TableName=settings().api_keys_table,
                    Key={"key_hash": item["key_hash"]},
                    UpdateExpression="SET disabled = :true, revoked_at = :at",
                    ExpressionAttributeValues={":true": {"BOOL": True}, ":at": {"S": revoked_at}},
                )
                return ApiKeyRecord(
                    id=api_key_id,
                    tenant=item["tenant"]["S"],
                    name=item.get("name", {}).get("S", ""),
                    created_at=item.get("created_at", {}).get("S", ""),
                    revoked_at=revoked_at,
                )
    raise KeyError(api_key_id)


def tenant_for_authorization(header: str | None) -> str:
    """The tenant behind an `Authorization: Bearer <key>` header, or Unauthorized."""
    scheme, _, api_key = (header or "").partition(" ")
    api_key = api_key.strip()
    if scheme.lower() != "bearer" or not api_key:
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    if not api_key.isascii() or len(api_key) > MAX_KEY_CHARS:
        raise Unauthorized("The API key is not valid.")  # no key darkroom issues looks like this
    key_hash = hash_key(api_key)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key_hash)
    if cached and cached[0] > now:
        return cached[1]
    item = (
        aws.client("dynamodb")
        .get_item(TableName=settings().api_keys_table, Key={"key_hash": {"S": key_hash}}, ConsistentRead=True)
        .get("Item")
    )
    if not item or item.get("disabled", {}).get("BOOL"):
        raise Unauthorized("The API key is not valid.")
    tenant = item["tenant"]["S"]
    with _cache_lock:
        _cache[key_hash] = (now + CACHE_TTL_S, tenant)
    return tenant
