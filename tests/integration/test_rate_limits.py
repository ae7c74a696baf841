"""The shared rate limit against moto's DynamoDB and the emulator: workers taking turns at once never get the same
one, a job past the limit waits for its turn without a provider call, and what the provider announces is kept."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3

from darkroom import ratelimit
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, generations, job, queue_url, receive, submit
from tests.unit.test_rate_limit_turns import busiest_window


def routes_item(stack: LocalStack, route: str) -> dict[str, Any]:
    table = stack.template.attributes["RoutesTable"]["Ref"]
    return dict(boto3.client("dynamodb").get_item(TableName=table, Key={"route": {"S": route}}).get("Item") or {})


def test_concurrent_workers_never_share_a_turn(stack: LocalStack, settings_env: Any) -> None:
    # Given a route limited to 60 images a minute and eight workers asking for 20 turns each at once
    settings_env(PROVIDER_IMAGES_PER_MINUTE="race=60")
    turns: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            turn = ratelimit.take_turn("race", images=1)
            assert turn.reserved
            with lock:
                turns.append(turn.at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the 160 turns hold no window over the limit
    assert len(turns) == 160
    assert busiest_window([(at, 1) for at in turns]) <= 60
    # And the backlog reaches about 2.7 minutes ahead at 94% of the limit, not a herd at one time
    span = max(turns) - min(turns)
    assert 150 <= span <= ratelimit.MAX_AHEAD_S, span


def test_a_job_past_the_limit_waits_for_its_turn_without_a_call(stack: LocalStack, settings_env: Any) -> None:
    # Given a limit of 2 images a minute whose one-image burst is used up
    settings_env(PROVIDER_IMAGES_PER_MINUTE="2")
    first, second = submit(stack, prompt="first in line"), submit(stack, prompt="second in line")
    messages = receive(stack)
    assert len(messages) == 2
    # When the worker handles both messages
    assert deliver(stack, messages)["batchItemFailures"] == []
    # Then one job ran, and the other is still queued with no call made and no attempt spent
    done, waiting = sorted((job(first), job(second)), key=lambda found: found.status != "succeeded")
    assert done.status == "succeeded" and generations(stack, done.id) == 1
    assert waiting.status == "queued" and waiting.provider_calls == 0 and waiting.rate_limits == 0
    assert generations(stack, waiting.id) == 0
    # And its message was sent again for its reserved turn, about a minute away (62 s / 1.5 a minute's refill)
    assert receive(stack, wait_s=0) == []  # delayed: not visible yet
    boto3.client("sqs").purge_queue(QueueUrl=queue_url(stack))


def test_a_message_back_for_its_turn_runs_the_job(stack: LocalStack, settings_env: Any) -> None:
    settings_env(PROVIDER_IMAGES_PER_MINUTE="openai=1")
    job_id = submit(stack, prompt="its turn came")
    (message,) = receive(stack)
    body = json.loads(message["Body"])
    # A turn reserved a moment ago on the job's route: no new take, the call is made at once
    message["Body"] = json.dumps({**body, "turn": {"route": "openai", "at": time.time() - 1}})
    before = routes_item(stack, "openai").get("tat")
    assert deliver(stack, [message])["batchItemFailures"] == []
    assert job(job_id).status == "succeeded"
    assert routes_item(stack, "openai").get("tat") == before


def test_announced_limits_are_kept_and_a_429_holds_the_route_off(stack: LocalStack, settings_env: Any) -> None:
    settings_env(PROVIDER_IMAGES_PER_MINUTE="")
    emulator = stack.emulator
    assert emulator is not None
    emulator.limiter.limit = 3
    try:
        job_id = submit(stack, prompt="learn the limit")
        deliver(stack, receive(stack))
        assert job(job_id).status == "succeeded"
        assert routes_item(stack, "openai")["learned_images"] == {"N": "3"}
        ratelimit.hold_off("openai", 30)
        turn = ratelimit.take_turn("openai", images=1)
        assert turn.at >= time.time() + 29
    finally:
        emulator.limiter.limit = 0
        boto3.client("dynamodb").delete_item(
            TableName=stack.template.attributes["RoutesTable"]["Ref"], Key={"route": {"S": "openai"}}
        )
        ratelimit._limits_read.clear()
