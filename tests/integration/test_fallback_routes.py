"""Fallback routes and the provider breaker against moto's server and the emulator: a job moves to its next route
only when the one before certainly did not generate, or is held off by an open breaker; the breaker opens after N
failures in a row across jobs and lets one probe through once its window ends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from darkroom import breakers, ratelimit
from darkroom.jobs import run
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.providers import registry
from darkroom_local.stack import EMULATOR_KEY, LocalStack, free_port
from tests.integration.test_rate_limits import routes_item
from tests.pipeline import deliver, faults, generations, job, receive, submit

pytestmark = pytest.mark.usefixtures("calm_provider")

CHAINED = "*=openai|gateway"


@pytest.fixture
def openai_down(stack: LocalStack, settings_env: Any) -> Iterator[None]:
    """The openai route's endpoint refuses connections (nothing listens there); the gateway route is the emulator.
    Each test starts with a closed breaker on both routes."""
    emulator_v1 = f"{stack.emulator.url}/v1" if stack.emulator else ""
    settings_env(
        PROVIDER_ROUTES=CHAINED,
        PROVIDER_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        GATEWAY_BASE_URL=emulator_v1,
        PROVIDER_BREAKER_FAILURES="3",
        PROVIDER_BREAKER_OPEN_S="2",
    )
    close_breakers(stack)
    yield
    close_breakers(stack)


def close_breakers(stack: LocalStack) -> None:
    table = stack.template.attributes["RoutesTable"]["Ref"]
    for route in ("openai", "gateway", "breaker-test"):
        boto3.client("dynamodb").delete_item(TableName=table, Key={"route": {"S": route}})


def run_to_the_end(stack: LocalStack, job_id: str, rounds: int = 4) -> Job:
    """Deliver the job's messages (a fallback's comes back after a second) until it has ended."""
    for _ in range(rounds):
        found = job(job_id)
        if found.terminal:
            return found
        messages = receive(stack, wait_s=3)
        assert messages, f"no message for {found.status} job {job_id}"
        deliver(stack, messages)
    return job(job_id)


@pytest.mark.usefixtures("openai_down")
def test_a_job_whose_route_refuses_connections_moves_to_its_fallback_and_succeeds(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="primary down")
    assert (job(job_id).route, job(job_id).fallbacks) == ("openai", ["gateway"])

    ended = run_to_the_end(stack, job_id)

    assert ended.status == "succeeded" and ended.route == "gateway" and ended.fallbacks == []
    assert [(t["route"], t["reason"]) for t in ended.routes_tried] == [("openai", "provider_unavailable")]
    # The refused call never reached a provider; the gateway's is the one generation, its own attempt
    assert generations(stack, job_id) == 1 and ended.provider_calls == 2 and ended.transient_failures == 0


def test_a_route_whose_key_is_refused_moves_its_jobs_to_the_fallback(stack: LocalStack, settings_env: Any) -> None:
    settings_env(PROVIDER_ROUTES=CHAINED, GATEWAY_BASE_URL=f"{stack.emulator.url}/v1" if stack.emulator else "")
    secrets = boto3.client("secretsmanager")
    openai_secret = stack.template.attributes["ProviderSecret"]["Ref"]
    secrets.put_secret_value(SecretId=openai_secret, SecretString="sk-revoked-key-of-the-openai-route")
    registry.reset()
    try:
        ended = run_to_the_end(stack, submit(stack, prompt="revoked key"))
    finally:
        secrets.put_secret_value(SecretId=openai_secret, SecretString=EMULATOR_KEY)
        registry.reset()
    assert ended.status == "succeeded" and ended.route == "gateway"
    assert [t["reason"] for t in ended.routes_tried] == ["provider_auth"]
    assert "revoked" not in json.dumps(ended.routes_tried)


def test_a_call_that_may_have_generated_never_moves_to_the_fallback(stack: LocalStack, settings_env: Any) -> None:
    settings_env(
        PROVIDER_ROUTES=CHAINED,
        GATEWAY_BASE_URL=f"{stack.emulator.url}/v1" if stack.emulator else "",
        PROVIDER_TIMEOUT_S="1",
    )
    faults(stack, "hang")
    job_id = submit(stack, prompt="hung primary")
    deliver(stack, receive(stack))
    ended = job(job_id)
    # The hung call may be rendering, and billed: the job ends rather than pay twice
    assert ended.status == "failed" and ended.error is not None and ended.error["code"] == "provider_timeout"
    assert ended.route == "openai" and ended.routes_tried == [] and ended.provider_calls == 1
    assert receive(stack, wait_s=2) == []


@pytest.mark.usefixtures("openai_down")
def test_a_request_that_names_its_provider_is_never_moved(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="pinned", provider="openai")
    deliver(stack, receive(stack))
    pinned = job(job_id)
    # Retried on its own route, as before fallbacks existed
    assert pinned.status == "queued" and pinned.route == "openai" and pinned.fallbacks == []
    assert pinned.transient_failures == 1 and pinned.routes_tried == []


@pytest.mark.usefixtures("openai_down")
def test_the_breaker_opens_after_failures_in_a_row_and_lets_one_probe_through_after_its_window() -> None:
    lease = 60.0
    for count in (1, 2):
        assert breakers.admit("breaker-test", probe_lease_s=lease).failures == count - 1
        breakers.record("breaker-test", breakers.admit("breaker-test", probe_lease_s=lease), failed=True)
    assert not breakers.admit("breaker-test", probe_lease_s=lease).open  # two failures: still closed
    breakers.record("breaker-test", breakers.CLOSED, failed=True)

    opened = breakers.admit("breaker-test", probe_lease_s=lease)
    assert opened.open and opened.until is not None and 0 < opened.until - time.time() <= 2

    # Once the window has passed, eight workers asking at once: exactly one gets the probe
    time.sleep(opened.until - time.time() + 0.1)
    gates: list[breakers.Gate] = []
    threads = [
        threading.Thread(target=lambda: gates.append(breakers.admit("breaker-test", probe_lease_s=lease)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    probes = [gate for gate in gates if gate.probe]
    assert len(probes) == 1 and all(gate.open for gate in gates if not gate.probe)

    # A failed probe opens it again for a whole window; a successful one closes it
    breakers.record("breaker-test", probes[0], failed=True)
    reopened = breakers.admit("breaker-test", probe_lease_s=lease)
    assert reopened.open and reopened.until is not None
    time.sleep(reopened.until - time.time() + 0.1)
    probe = breakers.admit("breaker-test", probe_lease_s=lease)
    assert probe.probe
    breakers.record("breaker-test", probe, failed=False)
    assert breakers.admit("breaker-test", probe_lease_s=lease) == breakers.Gate(failures=0)


@pytest.mark.usefixtures("openai_down")
def test_a_probe_that_makes_no_call_is_given_back() -> None:
    for _ in range(3):
        breakers.record("breaker-test", breakers.CLOSED, failed=True)
    time.sleep(2.1)
    probe = breakers.admit("breaker-test", probe_lease_s=600)
    assert probe.probe and breakers.admit("breaker-test", probe_lease_s=600).open
    breakers.release("breaker-test", probe)
    assert breakers.admit("breaker-test", probe_lease_s=600).probe


@pytest.mark.usefixtures("openai_down")
def test_jobs_failing_on_the_primary_open_its_breaker_and_later_jobs_skip_it(
    stack: LocalStack, settings_env: Any
) -> None:
    settings_env(PROVIDER_BREAKER_OPEN_S="60")  # no probe while this test runs
    first = [submit(stack, prompt=f"opens the breaker {i}") for i in range(3)]
    for job_id in first:
        run_to_the_end(stack, job_id)
    assert "open_until" in routes_item(stack, "openai")

    later = run_to_the_end(stack, submit(stack, prompt="after the breaker opened"))
    # Moved before any call: the open breaker said so, not a refused connection
    assert later.status == "succeeded" and later.route == "gateway" and later.provider_calls == 1
    assert [t["reason"] for t in later.routes_tried] == ["circuit_open"]


@pytest.mark.usefixtures("openai_down")
def test_a_job_with_no_other_route_waits_for_its_breaker_without_a_call(stack: LocalStack, settings_env: Any) -> None:
    for _ in range(3):
        breakers.record("openai", breakers.CLOSED, failed=True)
    settings_env(PROVIDER_ROUTES="*=openai")
    job_id = submit(stack, prompt="waits for the breaker")
    deliver(stack, receive(stack))
    waiting = job(job_id)
    assert waiting.status == "queued" and waiting.provider_calls == 0 and waiting.transient_failures == 0
    (message,) = receive(stack, wait_s=5)  # back when the window ends
    body = json.loads(message["Body"])
    assert body["attempt"] == 0 and body["route_down_since"] <= time.time()

    # Past the longest wait, the job fails without a call
    message["Body"] = json.dumps({**body, "route_down_since": time.time() - run.ROUTE_DOWN_MAX_WAIT_S - 1})
    time.sleep(max(0.0, float(routes_item(stack, "openai")["open_until"]["N"]) - time.time()))
    for _ in range(3):  # the window may have ended: reopen it so the message meets an open breaker
        breakers.record("openai", breakers.CLOSED, failed=True)
    deliver(stack, [message])
    failed = job(job_id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "provider_unavailable" and failed.provider_calls == 0
    assert generations(stack, job_id) == 0


def test_a_jobs_budget_reservation_covers_the_dearest_of_its_routes(stack: LocalStack, settings_env: Any) -> None:
    settings_env(PROVIDER_ROUTES="*=openai|wavespeed")
    found = job(submit(stack, prompt="reserved for the dearest route", quality="low"))
    # A low-quality image costs cents through OpenAI's tokens; WaveSpeed lists $0.06 per image
    assert found.fallbacks == ["wavespeed"] and found.quota is not None
    assert Decimal(found.quota["usd"]) == Decimal("0.06")


@pytest.mark.usefixtures("openai_down")
def test_the_routes_item_never_holds_a_key(stack: LocalStack) -> None:
    # Only numbers: the breaker, the limiter's timeline, announced limits
    for _ in range(3):
        breakers.record("breaker-test", breakers.CLOSED, failed=True)
    ratelimit.learn("breaker-test", {"images": 60})
    try:
        item = routes_item(stack, "breaker-test")
        assert {"failures", "open_until", "learned_images"} <= set(item)
        assert all(set(value) == {"N"} for name, value in item.items() if name != "route")
    finally:
        ratelimit._limits_read.clear()  # this process's cache of what routes announced


@pytest.mark.usefixtures("openai_down")
def test_a_stale_read_cannot_claim_the_route_the_job_left(stack: LocalStack) -> None:
    # Worker 2 read the job on openai; worker 1 then found openai's breaker open and moved the job to the gateway
    stale = job(submit(stack, prompt="moved under a stale reader"))
    JobStore().reroute(stale, **run._next_route(stale, "circuit_open"))
    with pytest.raises(LeaseLost):
        JobStore().claim(stale, lease_s=60)  # worker 2 cannot call the route the job left


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(lambda: time.time() + 10 * run.ratelimit.MAX_AHEAD_S, id="beyond-any-reservation"),
        pytest.param(lambda: 10**400, id="too-large-for-a-float"),
        pytest.param(lambda: float("nan"), id="nan"),
        pytest.param(lambda: "soon", id="not-a-number"),
        pytest.param(lambda: True, id="a-boolean"),
    ],
)
def test_a_turn_no_reservation_could_have_made_is_not_honoured(at: Any) -> None:
    found = Job(id="job_x", tenant="dev", kind="generate", status="queued", request={}, created_at="", updated_at="")
    assert run._reserved_turn(found, {"turn": {"route": "openai", "at": at()}}) is None


def test_waiting_for_turns_keeps_the_route_down_clock() -> None:
    assert run._carried({"route_down_since": 1_795_000_000.5}) == {"route_down_since": 1_795_000_000.5}
    assert run._carried({"route_down_since": "yesterday"}) == {} == run._carried({})


@pytest.mark.usefixtures("openai_down")
def test_a_moderation_check_that_cannot_reach_the_primary_moves_the_job_to_its_fallback(
    stack: LocalStack, settings_env: Any
) -> None:
    settings_env(MODERATION_MODE="prompt")
    job_id = submit(stack, prompt="checked on the fallback")
    ended = run_to_the_end(stack, job_id)
    assert ended.status == "succeeded" and ended.route == "gateway"
    assert [t["reason"] for t in ended.routes_tried] == ["moderation_unavailable"]
    assert stack.emulator is not None and stack.emulator.stats.moderations >= 1
