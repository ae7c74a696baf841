"""`darkroom webhooks listen`'s receiver: it accepts what verifies with its secret, and refuses the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from darkroom.webhooks import signing
from darkroom_local.cli import main
from darkroom_local.webhook_listener import WebhookListener

BODY = (
    b'{"type":"job.succeeded","timestamp":"t","data":{"id":"job_x","outputs":[{"width":8,"height":8,"format":"png"}]}}'
)


@pytest.fixture
def listener() -> Iterator[WebhookListener]:
    lines: list[str] = []
    server = WebhookListener(0, signing.new_secret(), show=lines.append)
    server.lines = lines  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_verified_delivery_is_printed_and_answered_204(listener: WebhookListener) -> None:
    headers = signing.headers([listener.secret], "msg_1", int(time.time()), BODY)
    assert httpx.post(listener.url, content=BODY, headers=headers).status_code == 204
    assert listener.received[0]["data"]["id"] == "job_x"
    assert listener.lines == ["job.succeeded job_x (msg_1): 8x8 png"]  # type: ignore[attr-defined]


def test_a_delivery_signed_with_another_secret_is_refused(listener: WebhookListener) -> None:
    headers = signing.headers([signing.new_secret()], "msg_2", int(time.time()), BODY)
    assert httpx.post(listener.url, content=BODY, headers=headers).status_code == 401
    assert listener.received == [] and "REFUSED msg_2" in listener.lines[0]  # type: ignore[attr-defined]


def test_the_cli_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhooks", "listen", "--help"]) == 0
    assert "Usage: darkroom webhooks listen" in capsys.readouterr().out
