"""Logs proven clean: a whole flow's every log record, from every logger, holds no secret and no prompt."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from darkroom import aws
from darkroom.observability import logger
from darkroom_local.stack import EMULATOR_KEY, LocalStack
from tests.pipeline import deliver, faults, job, queue_url, receive, submit
from tests.support import drain, http_event, response_json

PROMPTS = {
    "success": "a lighthouse at dusk, secret-prompt-0001",
    "failure": "a storm over the sea, secret-prompt-0002",
    "refusal": "[refuse] secret-prompt-0003",
}


@pytest.fixture
def every_record() -> Iterator[list[str]]:
    """Each record as it would be written: powertools' JSON for darkroom's logger at DEBUG, with tracebacks, and
    every other logger's (httpx, boto, the stack's own) at INFO. botocore's wire log at DEBUG holds whole request
    bodies by design; turning it on is an operator's explicit choice, not something darkroom ships."""
    lines: list[str] = []
    darkroom_logger = logging.getLogger(logger.name)
    json_format = darkroom_logger.handlers[0].formatter
    plain_format = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            formatter = json_format if record.name == logger.name and json_format else plain_format
            lines.append(formatter.format(record))

    capture = Capture(level=logging.DEBUG)
    root = logging.getLogger()
    saved = (darkroom_logger.level, root.level)
    darkroom_logger.addHandler(capture)
    root.addHandler(capture)
    darkroom_logger.setLevel(logging.DEBUG)
    root.setLevel(logging.INFO)
    yield lines
    darkroom_logger.removeHandler(capture)
    root.removeHandler(capture)
    darkroom_logger.setLevel(saved[0])
    root.setLevel(saved[1])


def test_a_whole_flow_logs_no_key_secret_signature_or_prompt(
    stack: LocalStack, every_record: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.emulator is not None
    drain(queue_url(stack))
    api = stack.functions["ApiFunction"]
    # Given a success, a provider failure (a hang past a 1 s timeout), a refusal, and a request with a wrong key
    succeeded = submit(stack, prompt=PROMPTS["success"])
    deliver(stack, receive(stack))
    monkeypatch.setenv("PROVIDER_TIMEOUT_S", "1")
    aws.reset()
    faults(stack, "hang")
    failed = submit(stack, prompt=PROMPTS["failure"])
    deliver(stack, receive(stack))
    stack.emulator.config.fault_rate = 0.0
    refused = submit(stack, prompt=PROMPTS["refusal"])
    deliver(stack, receive(stack))
    wrong_key = "dr_wrong_" + "k" * 40
    assert api.invoke(http_event("GET", "/v1/jobs", api_key=wrong_key))["statusCode"] == 401
    # And the jobs read back with their presigned download links
    answers: dict[str, Any] = {}
    for job_id in (succeeded, failed, refused):
        answers[job_id] = response_json(
            api.invoke(http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"]))
        )
    monkeypatch.undo()
    aws.reset()
    assert [job(i).status for i in (succeeded, failed, refused)] == ["succeeded", "failed", "failed"]
    signatures = [re.search(r"X-Amz-Signature=([0-9a-f]+)", o["url"]).group(1) for o in answers[succeeded]["outputs"]]  # type: ignore[union-attr]
    assert signatures

    # Then no record holds a key, the provider key, a webhook secret, a signature or a prompt
    text = "\n".join(every_record)
    assert len(every_record) > 20, "the capture saw too little to prove anything"
    secrets = [*stack.api_keys.values(), wrong_key, EMULATOR_KEY, *signatures, *PROMPTS.values()]
    leaked = [secret for secret in secrets if secret in text]
    assert not leaked, f"logged: {leaked}"
    assert "whsec_" not in text and "X-Amz-Signature" not in text and "secret-prompt" not in text
    # And the accepted jobs carry the prompt's hash and length instead
    digest = hashlib.sha256(PROMPTS["success"].encode()).hexdigest()[:16]
    assert f'"prompt_sha256":"{digest}"' in text and f'"prompt_chars":{len(PROMPTS["success"])}' in text
