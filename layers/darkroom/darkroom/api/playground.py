"""The playground page (GET /): one HTML file with its style and script inline, served by the api function itself so
every deployment has it at its own address and calls its own API from the same origin.

Its Content-Security-Policy allows only that inline script and style (by hash), the API itself, and images and
uploads at the bucket's presigned addresses; the page writes what the API says with textContent, never as HTML.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

from darkroom.api.http import Response

PAGE = Path(__file__).with_name("playground.html")
# Presigned links point at S3 (https) or, locally, at moto's server on the loopback address.
STORAGE_SOURCES = "https: http://127.0.0.1:* http://localhost:*"


@functools.cache
def _page() -> tuple[str, str]:
    html = PAGE.read_text()
    hashes = {
        kind: " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
            for block in re.findall(rf"<{kind}>(.*?)</{kind}>", html, flags=re.S)
        )
        for kind in ("script", "style")
    }
    policy = (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
        f"connect-src 'self' {STORAGE_SOURCES}; img-src 'self' data: blob: {STORAGE_SOURCES}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


def page() -> Response:
    html, policy = _page()
    headers = {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return Response(200, html, headers)
