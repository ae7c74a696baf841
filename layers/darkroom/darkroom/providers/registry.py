"""The adapter for each provider route (darkroom.routing), and the keys they are called with.

`openai` calls the OpenAI-compatible endpoint at PROVIDER_BASE_URL (OpenAI, a gateway, or the emulator) with the key
in PROVIDER_SECRET_ARN; `gateway` another one, at GATEWAY_BASE_URL with the key in GATEWAY_SECRET_ARN; `wavespeed`
calls WAVESPEED_BASE_URL with the key in WAVESPEED_SECRET_ARN.
"""

from __future__ import annotations

import json
import threading
import time
from functools import cache, partial
from typing import TYPE_CHECKING

from darkroom import aws
from darkroom.providers.openai import OpenAICompatibleProvider
from darkroom.providers.wavespeed import WaveSpeedProvider
from darkroom.settings import settings

if TYPE_CHECKING:  # only the batches function calls the Batch API: nothing else pays for its import
    from darkroom.providers.batches import OpenAIBatchApi

SECRET_TTL_S = 300.0  # a rotated key is picked up within five minutes

_secret_lock = threading.Lock()
_secrets: dict[str, tuple[float, str]] = {}


def _secret(secret_arn: str) -> str:
    """A key from Secrets Manager: the secret string itself, or its `api_key` field if it is JSON."""
    with _secret_lock:
        cached = _secrets.get(secret_arn)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        value = aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
        if value.lstrip().startswith("{"):
            value = json.loads(value).get("api_key", "")
        _secrets[secret_arn] = (time.monotonic() + SECRET_TTL_S, value)
        return value


def provider_api_key() -> str:
    return _secret(settings().provider_secret_arn)


@cache
def _openai_compatible(base_url: str, secret_arn: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url, partial(_secret, secret_arn))


@cache
def _wavespeed(base_url: str, secret_arn: str, allow_private_urls: bool) -> WaveSpeedProvider:
    return WaveSpeedProvider(base_url, partial(_secret, secret_arn), allow_private_urls=allow_private_urls)


def provider_for(route: str) -> OpenAICompatibleProvider:
    """The adapter of a synchronous route: `openai` or `gateway`."""
    s = settings()
    if route == "gateway":
        return _openai_compatible(s.gateway_base_url, s.gateway_secret_arn)
    return _openai_compatible(s.provider_base_url, s.provider_secret_arn)


def async_provider_for(route: str) -> WaveSpeedProvider:
    """The adapter of an asynchronous route (the only one is `wavespeed`)."""
    s = settings()
    return _wavespeed(s.wavespeed_base_url, s.wavespeed_secret_arn, s.allow_private_urls)


@cache
def _batch_api(base_url: str, secret_arn: str) -> OpenAIBatchApi:
    from darkroom.providers.batches import OpenAIBatchApi

    return OpenAIBatchApi(base_url, partial(_secret, secret_arn))


def batch_api() -> OpenAIBatchApi:
    """OpenAI's Files and Batch APIs, at the `openai` route's address with its key: the only route with a batch
    tier."""
    s = settings()
    return _batch_api(s.provider_base_url, s.provider_secret_arn)


def reset() -> None:
    with _secret_lock:
        _secrets.clear()
    _openai_compatible.cache_clear()
    _wavespeed.cache_clear()
    _batch_api.cache_clear()
