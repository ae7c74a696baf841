"""Fallback routes through the whole local stack: with the openai route's provider stopped, jobs go to the gateway
route's (a second emulator), the openai route's breaker opens, and later jobs skip it without trying it."""

from __future__ import annotations

import boto3
import pytest

from darkroom_local.emulator import Emulator, EmulatorConfig
from darkroom_local.stack import EMULATOR_KEY
from tests.e2e.served import api_client, served_stack, wait_for_end

pytestmark = pytest.mark.e2e

JOBS = 6
BREAKER_FAILURES = 3


def test_jobs_go_to_the_fallback_route_when_the_primary_provider_is_down_and_its_breaker_opens() -> None:
    gateway = Emulator(EmulatorConfig(api_key=EMULATOR_KEY))
    gateway.start("127.0.0.1", 0)
    parameters = {
        "ProviderRoutes": "*=openai|gateway",
        "GatewayBaseUrl": f"{gateway.url}/v1",
        "ProviderBreakerFailures": str(BREAKER_FAILURES),
        "ProviderBreakerOpenSeconds": "300",  # no probe while the test runs
    }
    try:
        with served_stack(parameters=parameters) as stack, api_client(stack) as client:
            # Given the openai route's provider stopped: its address refuses connections
            assert stack.emulator is not None
            stack.emulator.stop()
            # When jobs arrive one after another
            jobs = []
            for i in range(JOBS):
                answer = client.post("/v1/images/generations", json={"prompt": f"fallback {i}", "quality": "low"})
                assert answer.status_code == 202, answer.text
                assert answer.json()["provider"]["fallbacks"] == ["gateway"]
                jobs.append(wait_for_end(client, answer.json()["id"]))
            # Then every job succeeded on the gateway, each generated once there, by the gateway's own count
            assert [(job["status"], job["provider"]["route"]) for job in jobs] == [("succeeded", "gateway")] * JOBS
            assert sorted(gateway.stats.generations.values()) == [1] * JOBS
            assert sum(stack.emulator.stats.generations.values()) == 0
            # The first ones found the primary refusing; after BREAKER_FAILURES its breaker was open and the rest
            # never tried it
            reasons = [[tried["reason"] for tried in job["provider"]["tried"]] for job in jobs]
            assert reasons == [["provider_unavailable"]] * BREAKER_FAILURES + [["circuit_open"]] * (
                JOBS - BREAKER_FAILURES
            )
            assert [job["attempts"] for job in jobs] == [2] * BREAKER_FAILURES + [1] * (JOBS - BREAKER_FAILURES)
            table = stack.template.attributes["RoutesTable"]["Ref"]
            breaker = boto3.client("dynamodb").get_item(TableName=table, Key={"route": {"S": "openai"}})["Item"]
            assert int(breaker["failures"]["N"]) == BREAKER_FAILURES and "open_until" in breaker
    finally:
        gateway.stop()
