"""Endpoint registrations and changes are validated before anything is stored: the events list included."""

from __future__ import annotations

import time
from typing import Any

import pytest

from darkroom.errors import ValidationFailed
from darkroom.webhooks.requests import parse_webhook_endpoint, parse_webhook_endpoint_update

URL = "http://127.0.0.1:9000/hooks"


def rules(parse: Any, body: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as refused:
        parse(body, allow_http=True, allow_private=True)
    return {(error.field, error.rule) for error in refused.value.errors}


@pytest.mark.parametrize("parse", [parse_webhook_endpoint, parse_webhook_endpoint_update])
def test_an_events_list_is_each_event_at_most_once(parse: Any) -> None:
    # Given lists that repeat an event, or are longer than the events there are
    repeated = ["job.failed", "job.succeeded", "job.failed"]
    too_long = ["job.succeeded", "job.failed", "job.canceled", "job.progress", "job.succeeded"]
    # When they are validated, Then each is refused naming the field and the rule
    assert rules(parse, {"url": URL, "events": repeated}) == {("events", "events_repeated")}
    assert rules(parse, {"url": URL, "events": too_long}) == {("events", "too_long")}
    # and every event once, in any order, is fine
    assert parse(
        {"url": URL, "events": ["job.canceled", "job.failed", "job.succeeded"]}, allow_http=True, allow_private=True
    ).events


def test_a_huge_events_list_is_refused_at_once() -> None:
    # Given a list of 400,000 repeats
    started = time.monotonic()
    # When it is validated, Then it is refused by its length, without looking at each entry
    assert rules(parse_webhook_endpoint, {"url": URL, "events": ["job.failed"] * 400_000}) == {("events", "too_long")}
    assert time.monotonic() - started < 1


def test_an_endpoint_naming_no_events_gets_every_end_of_a_job_but_no_progress() -> None:
    endpoint = parse_webhook_endpoint({"url": URL}, allow_http=True, allow_private=True)
    assert sorted(endpoint.events) == ["job.canceled", "job.failed", "job.succeeded"]
    asked = parse_webhook_endpoint({"url": URL, "events": ["job.progress"]}, allow_http=True, allow_private=True)
    assert asked.events == ["job.progress"]
