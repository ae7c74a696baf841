"""Sending one event to a subscriber: only 2xx delivers, 410 is gone, redirects are failures, retry-after is honoured
within the schedule, and nothing is sent to a private address unless the local stack allows it."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest
from standardwebhooks.webhooks import Webhook

from darkroom.webhooks import delivery, signing

BODY = b'{"type":"job.succeeded","timestamp":"2026-11-23T12:00:00Z","data":{"id":"job_x"}}'


class Receiver(http.server.ThreadingHTTPServer):
    answers: list[tuple[int, dict[str, str]]]
    seen: list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server: Receiver = self.server  # type: ignore[assignment]
            body = self.rfile.read(int(self.headers["content-length"]))
            server.seen.append((dict(self.headers), body))
            status, headers = server.answers.pop(0) if server.answers else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = Receiver(("127.0.0.1", 0), Handler)
    server.answers, server.seen = [], []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.shutdown()


def post(server: Receiver, *, allow_private: bool = True) -> delivery.Attempt:
    secret = signing.new_secret()
    server.secret = secret  # type: ignore[attr-defined]
    headers = signing.headers([secret], "msg_1", int(time.time()), BODY)
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    return delivery.send(url, BODY, headers, allow_http=True, allow_private=allow_private)


def test_a_2xx_is_a_delivery_the_subscriber_can_verify(receiver: Receiver) -> None:
    attempt = post(receiver)
    assert attempt.outcome == "delivered" and attempt.status == 200 and attempt.response == "ok"
    (headers, body) = receiver.seen[0]
    assert body == BODY
    Webhook(receiver.secret).verify(body, headers)  # type: ignore[attr-defined]


def test_410_means_the_subscriber_is_gone(receiver: Receiver) -> None:
    receiver.answers.append((410, {}))
    assert post(receiver).outcome == "gone"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failure_never_followed(receiver: Receiver, status: int) -> None:
    receiver.answers.append((status, {"location": "http://169.254.169.254/latest/meta-data/"}))
    attempt = post(receiver)
    assert attempt.outcome == "failed" and "redirect" in (attempt.error or "")
    assert len(receiver.seen) == 1


@pytest.mark.parametrize(("status", "honoured"), [(429, 120.0), (503, 120.0), (400, None)])
def test_retry_after_is_honoured_on_429_and_5xx(receiver: Receiver, status: int, honoured: float | None) -> None:
    receiver.answers.append((status, {"retry-after": "120"}))
    attempt = post(receiver)
    assert attempt.outcome == "failed" and attempt.status == status and attempt.retry_after_s == honoured


def test_a_private_receiver_is_refused_unless_allowed(receiver: Receiver) -> None:
    attempt = post(receiver, allow_private=False)
    assert attempt.outcome == "failed" and attempt.status is None and receiver.seen == []


def test_a_host_written_as_a_number_is_never_sent_to() -> None:
    attempt = delivery.send("http://2130706433/", BODY, {}, allow_http=True, allow_private=True)
    assert attempt.outcome == "failed" and "number" in (attempt.error or "")


def test_the_schedule_has_jitter_honours_retry_after_and_ends() -> None:
    schedule = delivery.DEFAULT_SCHEDULE_S
    for made, base in enumerate(schedule):
        delay = delivery.next_delay_s(made, schedule)
        assert delay is not None and base <= delay <= base * 1.1
    assert delivery.next_delay_s(len(schedule), schedule) is None
    assert 600 <= (delivery.next_delay_s(1, schedule, retry_after=600) or 0) <= 660  # longer than 5 s
    assert (delivery.next_delay_s(7, schedule, retry_after=10**6) or 0) <= 36000 * 1.1  # never past the longest


def test_the_schedule_is_configuration() -> None:
    assert delivery.parse_schedule("0,1,2") == (0, 1, 2)
    assert delivery.parse_schedule("soon") == delivery.DEFAULT_SCHEDULE_S
    assert delivery.parse_schedule("") == delivery.DEFAULT_SCHEDULE_S


def test_a_delay_over_a_day_is_held_to_a_day() -> None:
    assert delivery.parse_schedule("0,5,99999") == (0, 5, 86_400)


def test_a_subscribers_retry_after_may_ask_for_hours(receiver: Receiver) -> None:
    receiver.answers.append((503, {"retry-after": "18000"}))
    attempt = post(receiver)
    assert attempt.retry_after_s == 18000.0  # not held to the providers' hour
    delay = delivery.next_delay_s(2, delivery.DEFAULT_SCHEDULE_S, attempt.retry_after_s)
    assert delay is not None and 18000 <= delay <= 18000 * 1.1


def test_the_schedules_first_entry_is_the_first_try_so_the_default_makes_eight_tries() -> None:
    # Given the default schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    schedule = delivery.DEFAULT_SCHEDULE_S
    # When each try's wait is asked for, by the tries made before it
    waits = [delivery.next_delay_s(made, schedule) for made in range(len(schedule) + 1)]
    # Then the first try goes at once, the first retry 5 s after it, and there is no ninth try
    assert waits[0] == 0 and 5 <= (waits[1] or 0) <= 5.5 and waits[-1] is None
