"""Which provider serves a model, and the key it is called with.

Every model in the catalog is served by the one OpenAI-compatible endpoint configured by PROVIDER_BASE_URL (OpenAI,
a gateway, or the emulator). Asynchronous providers join this table as they arrive.
"""

from __future__ import annotations

import json
import threading
import time
from functools import cache

from darkroom import aws
from darkroom.providers.openai import OpenAICompatibleProvider
from darkroom.settings import settings

SECRET_TTL_S = 300.0  # a rotated key is picked up within five minutes

_secret_lock = threading.Lock()
_secret: tuple[float, str] | None = None


def provider_api_key() -> str:
    """The provider key from Secrets Manager: the secret string itself, or its `api_key` field if it is JSON."""
    global _secret
    with _secret_lock:
        if _secret and _secret[0] > time.monotonic():
            return _secret[1]
        value = aws.client("secretsmanager").get_secret_value(SecretId=settings().provider_secret_arn)["SecretString"]
        if value.lstrip().startswith("{"):
            value = json.loads(value).get("api_key", "")
        _secret = (time.monotonic() + SECRET_TTL_S, value)
        return value


@cache
def _openai_compatible(base_url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url, provider_api_key)


def provider_for(model: str) -> OpenAICompatibleProvider:
    return _openai_compatible(settings().provider_base_url)


def reset() -> None:
    global _secret
    _secret = None
    _openai_compatible.cache_clear()
