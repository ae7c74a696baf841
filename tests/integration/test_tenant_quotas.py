"""Tenant quotas and usage against moto's DynamoDB: a budget that concurrent submits cannot overspend, jobs in
flight, submissions per minute, and usage counted once per ended job."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from darkroom import quotas, tenants
from darkroom.jobs import manifests
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.pipeline import call_api, deliver, job, queue_url, receive
from tests.support import drain, http_event

MEDIUM = {"prompt": "a red kite", "size": "1024x1024", "quality": "medium"}


@pytest.fixture
def tenant(stack: LocalStack, calm_provider: None) -> Iterator[tuple[str, str]]:
    """A fresh tenant of its own (quotas and usage start at nothing) and its key."""
    name = f"quota-{uuid.uuid4().hex[:8]}"
    yield name, tenants.create_api_key(name)
    drain(queue_url(stack))


def submit(stack: LocalStack, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    event = http_event("POST", "/v1/images/generations", api_key=key, body=body or MEDIUM)
    return call_api(stack, event)


def usage(stack: LocalStack, key: str, query: str = "") -> tuple[int, Any]:
    event = http_event("GET", "/v1/usage", api_key=key)
    event["rawQueryString"] = query
    event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&") if part)
    return call_api(stack, event)


def test_a_tenant_over_budget_gets_402_and_nothing_is_queued(stack: LocalStack, tenant: tuple[str, str]) -> None:
    name, key = tenant
    worst = quotas.worst_case_usd("gpt-image-2", MEDIUM, "openai")
    quotas.set_limits(name, monthly_budget_usd=worst * 2 - Decimal("0.001"))  # room for one, not two
    status, first = submit(stack, key)
    assert status == 202
    drain(queue_url(stack))
    status, refused = submit(stack, key)
    assert status == 402 and refused["error"]["code"] == "budget_exceeded"
    assert f"${worst}" in refused["error"]["message"]
    assert receive(stack) == []
    assert [j.id for j in JobStore().list_for_tenant(name, limit=10)[0]] == [first["id"]]


def test_concurrent_submits_cannot_overspend(stack: LocalStack, tenant: tuple[str, str]) -> None:
    name, key = tenant
    worst = quotas.worst_case_usd("gpt-image-2", MEDIUM, "openai")
    quotas.set_limits(name, monthly_budget_usd=worst * 5)
    answers: list[int] = []
    start = threading.Barrier(12)

    def race() -> None:
        start.wait()
        answers.append(submit(stack, key)[0])

    threads = [threading.Thread(target=race) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] * 5 + [402] * 7, answers
    assert quotas.committed_usd(name, quotas.month_of()) == worst * 5


def test_jobs_in_flight_are_limited_and_given_back_when_they_end(stack: LocalStack, tenant: tuple[str, str]) -> None:
    name, key = tenant
    quotas.set_limits(name, max_in_flight=2)
    assert submit(stack, key)[0] == 202 and submit(stack, key)[0] == 202
    status, refused = submit(stack, key)
    assert status == 429 and refused["error"]["code"] == "too_many_jobs_in_flight"
    # When one of the two ends, its slot is given back
    deliver(stack, receive(stack)[:1])
    assert submit(stack, key)[0] == 202


def test_submissions_per_minute_answer_429_with_retry_after(stack: LocalStack, tenant: tuple[str, str]) -> None:
    name, key = tenant
    quotas.set_limits(name, submits_per_minute=2)
    assert submit(stack, key)[0] == 202 and submit(stack, key)[0] == 202
    event = http_event("POST", "/v1/images/generations", api_key=key, body=MEDIUM)
    answer = stack.functions["ApiFunction"].invoke(event)
    assert answer["statusCode"] == 429 and 1 <= int(answer["headers"]["retry-after"]) <= 30


def test_usage_counts_each_ended_job_once_and_settles_its_reservation(
    stack: LocalStack, tenant: tuple[str, str]
) -> None:
    name, key = tenant
    for body in (MEDIUM, {**MEDIUM, "model": "gpt-image-1.5"}, {**MEDIUM, "prompt": "[refuse] this"}):
        assert submit(stack, key, body)[0] == 202
    assert deliver(stack, receive(stack))["batchItemFailures"] == []
    ended = JobStore().list_for_tenant(name, limit=10)[0]
    # Settling again (a duplicate message, the sweeper) counts nothing twice
    for found in ended:
        manifests.ensure(JobStore(), job(found.id))
    status, by_model = usage(stack, key, "group_by=model")
    assert status == 200
    rows = {row["model"]: row for row in by_model["data"]}
    assert (
        rows["gpt-image-2"]["jobs"] == 2
        and rows["gpt-image-2"]["succeeded"] == 1
        and rows["gpt-image-2"]["failed"] == 1
    )
    assert rows["gpt-image-1.5"]["images"] == 1 and rows["gpt-image-1.5"]["output_tokens"] > 0
    spent = sum((j.cost_usd or Decimal(0)) for j in ended)
    assert Decimal(str(by_model["total"]["cost_usd"])) == spent and spent > 0
    # The reservations were replaced by the real costs: committed is what was spent, nothing in flight
    assert quotas.committed_usd(name, quotas.month_of()) == spent
    assert by_model["budget"]["spent_usd"] == float(spent)
    status, by_day = usage(stack, key)
    assert status == 200 and [row["jobs"] for row in by_day["data"]] == [3]


def test_usage_refuses_bad_parameters_naming_them(stack: LocalStack, tenant: tuple[str, str]) -> None:
    _, key = tenant
    for query, field in (
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("group_by=week", "group_by"),
        ("from=2026-11-20&to=2026-11-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "to"),
        ("to=2020-01-01", "to"),  # before the default `from`: blamed on what the client sent
    ):
        status, answer = usage(stack, key, query)
        assert status == 422 and answer["error"]["fields"][0]["field"] == field, (query, answer)


def test_another_tenants_usage_is_not_shown(stack: LocalStack, tenant: tuple[str, str]) -> None:
    _, key = tenant
    assert submit(stack, key)[0] == 202
    deliver(stack, receive(stack))
    other = tenants.create_api_key(f"other-{uuid.uuid4().hex[:8]}")
    status, answer = usage(stack, other)
    assert status == 200 and answer["data"] == [] and answer["total"]["jobs"] == 0


def test_a_job_canceled_while_the_provider_has_it_is_counted_at_the_provider_price(
    stack: LocalStack, tenant: tuple[str, str]
) -> None:
    # WaveSpeed bills a submission whatever becomes of it: a cancel while polling must not hand the money back
    name, key = tenant
    status, accepted = submit(stack, key, {"prompt": "canceled after submit", "provider": "wavespeed"})
    assert status == 202
    deliver(stack, receive(stack))
    assert JobStore().get(accepted["id"]).status == "polling"  # type: ignore[union-attr]
    status, canceled = call_api(stack, http_event("DELETE", f"/v1/jobs/{accepted['id']}", api_key=key))
    assert status == 200 and canceled["status"] == "canceled"
    assert quotas.committed_usd(name, quotas.month_of()) == Decimal("0.06")


def test_an_edit_of_auto_size_reserves_the_largest_output_it_can_get() -> None:
    generation = quotas.worst_case_usd("gpt-image-2", {"prompt": "p", "size": "auto", "quality": "low"}, "openai")
    edit = quotas.worst_case_usd("gpt-image-2", {"prompt": "p", "size": "auto", "quality": "low"}, "openai", 1)
    largest = quotas.worst_case_usd("gpt-image-2", {"prompt": "p", "size": "3840x2160", "quality": "low"}, "openai", 1)
    assert edit == largest > generation
