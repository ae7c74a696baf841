"""boto3 clients, built on first use and shared by every invocation of a warm function.

boto3's default session is not safe to build clients from in several threads at once (the local stack runs
handlers concurrently), hence the lock.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from darkroom import ledger

_lock = threading.Lock()


@cache
def client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    # Short timeouts and few attempts: one slow call gives up after 3 x (2 + 5) s plus backoff, so a slow dependency
    # usually ends in a clean 503 within the api function's 29 s (several slow calls in a row can still outlast it).
    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 3},
        signature_version="s3v4" if service == "s3" else None,
    )
    with _lock:
        made = boto3.client(service, config=config)
    # Every request counts towards the job being worked on (darkroom.ledger).
    made.meta.events.register("before-parameter-build", ledger.count_request)
    return made


def reset() -> None:
    """Forget every client and setting: the local stack and tests call this after changing the environment."""
    from darkroom import settings

    client.cache_clear()
    settings.settings.cache_clear()


def is_aws_error(exc: BaseException) -> bool:
    """An error from boto3 or botocore: a dependency failed, not darkroom's own logic."""
    return type(exc).__module__.startswith(("botocore", "boto3"))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("ConditionalCheckFailedException", "NoSuchKey", ...), or ""."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
