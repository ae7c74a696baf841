"""The fault runs: 60 jobs (and 40 on the asynchronous WaveSpeed route) through the local stack while the emulator
fails a fifth of its calls.

Faults are an even mix of 429 with retry-after, 500, hangs longer than the worker's provider timeout, and slow
answers: the emulator renders (and bills) the images, then answers only after the worker's provider timeout, so
the call is ambiguous and must never be repeated. On top, the SQS pollers deliver a tenth of the messages twice, as
SQS's at-least-once delivery may. Whatever happens, every job must end in exactly one terminal state with its
manifest, nothing may stay on the queue, and no prompt may be generated, or submitted, more than once by the
emulator's own count (the provider's side of billing, not darkroom's records). On the asynchronous route the faults
also hit the poller's polls, which run in the real state machine on moto's executor.

Replayable: DARKROOM_FAULT_SEED fixes the emulator's fault draws and the pollers' duplicates (thread timing still
varies). Every run prints its seed; a run that finds a job breaking a rule also prints that job's trail, every
message delivered and every DynamoDB write with its outcome, so the failure can be read rather than guessed at.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest

from darkroom_local.emulator import EmulatorConfig
from darkroom_local.stack import LocalStack, StackConfig
from darkroom_local.webhook_listener import WebhookListener
from tests.conftest import QUIET
from tests.images import image_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

# The local stack is one Python process at about a second of CPU per job under coverage: 60 jobs keep the run well
# inside its four-minute patience while the other test process competes for the machine.
JOBS = 60
ASYNC_JOBS = 40
FAULT_RATE = 0.2
DUPLICATE_RATE = 0.1
TERMINAL = {"succeeded", "failed", "canceled"}


def queue_depth(stack: LocalStack, name: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.template.attributes[name]["QueueUrl"],
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_fault_run_loses_nothing_and_bills_each_job_at_most_once(record_property: Callable[[str, str], None]) -> None:
    # Every other job streams two previews: a cut or hung stream is as ambiguous as a cut answer.
    fault_run(record_property, jobs=JOBS, body=lambda i: {"n": 2} if i % 2 else {"n": 1, "partial_images": 2})


def test_async_fault_run_loses_nothing_and_submits_each_job_at_most_once(
    record_property: Callable[[str, str], None],
) -> None:
    fault_run(
        record_property,
        jobs=ASYNC_JOBS,
        body=lambda i: {"provider": "wavespeed"},
        parameters={"AsyncFirstPollSeconds": "1", "PollMaxWaitSeconds": "2"},
        async_ms=1500,
    )


GENERATIONS = "/v1/images/generations"
EDIT_SOURCE = {"b64_json": base64.b64encode(image_bytes("png", (96, 64))).decode()}


def fault_run(
    record_property: Callable[[str, str], None],
    *,
    jobs: int,
    body: Callable[[int], dict[str, Any]],
    parameters: dict[str, str] | None = None,
    async_ms: int = 3000,
) -> None:
    seed = int(os.environ.get("DARKROOM_FAULT_SEED", random.randrange(1_000_000)))
    random.seed(seed)  # the pollers' duplicate draws
    print(f"fault run seed {seed} (replay with DARKROOM_FAULT_SEED={seed})")  # shown by pytest if anything fails
    config = StackConfig(
        port=0,
        parameters={
            # Well above a loaded machine's render time, so only real hangs time out: a call abandoned mid-render
            # would still count as a generation, as a real provider may still bill it (see docs/decisions.md).
            "ProviderTimeoutSeconds": "5",
            "RetryBaseDelaySeconds": "1",
            "WorkerTimeoutSeconds": "15",
            "JobsQueueVisibilitySeconds": "15",
            "WorkerMaxConcurrency": "8",
            **(parameters or {}),
        },
        environment=dict(QUIET),
        duplicate_rate=DUPLICATE_RATE,
        trail=True,
        emulator=EmulatorConfig(
            latency_ms=20, fault_rate=FAULT_RATE, hang_ms=10_000, retry_after_s=1, seed=seed, async_ms=async_ms
        ),
    )
    started = time.monotonic()
    with (
        LocalStack(config) as stack,
        httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.api_keys['dev']}"}, timeout=30
        ) as client,
        # Every job's webhook goes to a receiver that verifies it with the tenant's secret, as a subscriber would
        WebhookListener(0, client.get("/v1/webhooks/secret").json()["secret"], show=lambda line: None) as listener,
    ):
        threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        # Given the accepted jobs
        ids = []
        for i in range(jobs):
            # Every fourth job is an edit: its inputs go to the provider as multipart files, or as links WaveSpeed
            # fetches, under the same faults and billing rules.
            path, inputs = ("/v1/images/edits", {"images": [EDIT_SOURCE]}) if i % 4 == 3 else (GENERATIONS, {})
            answer = client.post(
                path,
                json={
                    "prompt": f"fault run {i}",
                    "quality": "low",
                    "size": "1024x1024",
                    "webhook_url": listener.url,
                    **inputs,
                    **body(i),
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        expected_outputs = {job_id: body(i).get("n", 1) for i, job_id in enumerate(ids)}

        # When the stack works through them under faults
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            found = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in ids}
            if all(job["status"] in TERMINAL for job in found.values()):
                break
            time.sleep(1)
        # Then every job ended once, with a manifest that agrees, and the provider generated it at most once
        settle = time.monotonic() + 60
        while queue_depth(stack, "JobsQueue") and time.monotonic() < settle:
            time.sleep(1)
        assert stack.emulator is not None and stack.trail is not None
        stats = stack.emulator.stats.as_dict()
        statuses: Counter[str] = Counter(job["status"] for job in found.values())
        errors: Counter[str] = Counter(job["error"]["code"] for job in found.values() if job.get("error"))
        problems = {
            job_id: problem
            for job_id in ids
            if (problem := job_problem(stack, found[job_id], expected_outputs[job_id]))
        }
        duplicates = sum(poller.duplicates_sent for poller in stack.pollers)
        dead_letters = queue_depth(stack, "JobsDeadLetterQueue")
        left_on_queue = queue_depth(stack, "JobsQueue")
        prompts = stack.emulator.calls()["prompts"].values()
        most_generations = max((c["generations"] for c in prompts), default=0)
        most_submissions = max((c["submissions"] for c in prompts), default=0)
        report = "\n".join(f"{job_id}: {problem}\n{stack.trail.format(job_id)}" for job_id, problem in problems.items())
        assert not problems, f"fault run seed {seed}: {len(problems)} job(s) broke a rule\n{report}"
        assert left_on_queue == 0, f"fault run seed {seed}: {left_on_queue} message(s) left on the jobs queue"
        assert dead_letters == 0, f"fault run seed {seed}: {dead_letters} dead letter(s)"
        # The run really was faulty: every kind of fault happened, and SQS duplicated messages
        assert set(stats["faults"]) == {"rate_limit", "server_error", "hang", "slow"}, (seed, stats["faults"])
        assert duplicates > 0, seed
        # And every job's event reached its subscriber exactly once (SQS duplicates included), verified
        settle = time.monotonic() + 60
        while len(listener.received) < jobs and time.monotonic() < settle:
            time.sleep(0.5)
        time.sleep(2)  # a duplicate would come now
        delivered: Counter[str] = Counter(event["data"]["id"] for event in listener.received)
        assert set(delivered) == set(ids), f"fault run seed {seed}: no webhook for {set(ids) - set(delivered)}"
        twice = {job_id: n for job_id, n in delivered.items() if n > 1}
        assert not twice, f"fault run seed {seed}: webhooks delivered more than once: {twice}"
        assert all(event["type"] == f"job.{found[event['data']['id']]['status']}" for event in listener.received), seed
        listener.shutdown()

    elapsed = time.monotonic() - started
    # Printed at the end of the run (tests/conftest.py), from whichever process ran it.
    record_property(
        "summary",
        (
            f"fault run (seed {seed}): {jobs} jobs ({jobs // 4} of them edits) in {elapsed:.1f} s -> {dict(statuses)}"
            f"{' failures ' + str(dict(errors)) if errors else ''}; provider calls {stats['calls']}, "
            f"submissions {sum(c['submissions'] for c in prompts)}, "
            f"faults {stats['faults']}; most generations for one prompt (the emulator's count): "
            f"{most_generations}, most submissions {most_submissions}; "
            f"duplicate deliveries {duplicates}; webhooks delivered {len(listener.received)} for {jobs} jobs; stuck 0; "
            f"dead-lettered {dead_letters}"
        ),
    )


# `interrupted`: an asynchronous submission whose answer was lost (the `slow` fault), never repeated.
EXPECTED_FAILURES = {"provider_unavailable", "rate_limited", "provider_timeout", "provider_disconnected", "interrupted"}


def job_problem(stack: LocalStack, job: dict[str, Any], expected_outputs: int) -> str | None:
    """What, if anything, this job did wrong: no terminal state, a manifest that disagrees, a second generation or
    submission, missing outputs, or a failure no fault explains."""
    if job["status"] not in TERMINAL:
        return f"never ended ({job['status']})"
    assert stack.emulator is not None
    made = stack.emulator.generations_for(job["request"]["prompt"])
    count = stack.emulator.calls()["prompts"].get(job["request"]["prompt"], {})
    if made > 1 or count.get("submissions", 0) > 1:
        return f"generated {made} and submitted {count.get('submissions', 0)} times by the provider's own count"
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    s3 = boto3.client("s3")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"outputs/dev/{job['id']}/result.json")["Body"].read())
    if manifest["status"] != job["status"]:
        return f"manifest says {manifest['status']}"
    if job["status"] == "succeeded":
        if made != 1 or len(job["outputs"]) != expected_outputs:
            return f"succeeded with {made} generation(s) and {len(job['outputs'])} output(s)"
        for output in job["outputs"]:
            if s3.head_object(Bucket=bucket, Key=output["key"])["ContentLength"] != output["bytes"]:
                return f"output {output['key']} differs from its record"
    elif job["error"]["code"] not in EXPECTED_FAILURES:
        return f"failed as {job['error']}"
    return None
