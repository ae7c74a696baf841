"""The emulator's streaming rules: it must refuse what OpenAI refuses, so a hole in darkroom's own
validation shows up as a refused call instead of being mirrored."""

from __future__ import annotations

import httpx

from darkroom_local.emulator import Emulator


def test_a_json_stream_given_as_text_is_refused_as_openai_refuses_it(emulator: Emulator) -> None:
    # Given a JSON body (not a form) whose stream is the string "true"
    body = {"prompt": "a cat", "model": "gpt-image-2", "stream": "true", "partial_images": 1, "quality": "low"}
    answer = httpx.post(
        f"{emulator.url}/v1/images/generations", headers={"Authorization": "Bearer sk-test"}, json=body, timeout=30
    )
    # Then it is a 400 invalid_type on stream, as "yes" and "maybe" already are (only a form sends text)
    assert answer.status_code == 400, answer.headers.get("content-type")
    assert answer.json()["error"]["param"] == "stream"
