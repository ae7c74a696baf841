"""API keys: each maps to one tenant and is stored only as its SHA-256.

Keys are 256-bit random tokens, so a plain hash is as good as a slow one and keeps lookups to one GetItem.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time

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
