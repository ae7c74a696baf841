"""Identifiers and timestamps."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_job_id() -> str:
    """`job_` + a ULID-like id: 10 characters of milliseconds then 16 random, so ids sort by creation time."""
    return "job_" + _base32(int(time.time() * 1000), 10) + _base32(secrets.randbits(80), 16)


def new_batch_id() -> str:
    """darkroom's id of one batch of batch-tier jobs (OpenAI's own batch ids start `batch_`)."""
    return "dbatch_" + _base32(int(time.time() * 1000), 10) + _base32(secrets.randbits(80), 16)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
