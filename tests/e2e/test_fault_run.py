"""The fault run: 100 jobs through the local stack while the emulator fails a fifth of its calls.

Faults are an even mix of 429 with retry-after, 500, and hangs longer than the worker's provider timeout; on top,
the SQS pollers deliver a tenth of the messages twice, as SQS's at-least-once delivery may. Whatever
happens, every job must end in exactly one terminal state with its manifest, nothing may stay on the queue, and no
job may cause more than one successful provider generation.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from typing import Any

import boto3
import httpx
import pytest

from darkroom_local.emulator import EmulatorConfig
from darkroom_local.stack import LocalStack, StackConfig
from tests.conftest import QUIET

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

JOBS = 100
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


def test_fault_run_loses_nothing_and_bills_each_job_at_most_once(capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("DARKROOM_FAULT_SEED", random.randrange(1_000_000)))
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
        },
        environment=dict(QUIET),
        duplicate_rate=DUPLICATE_RATE,
        emulator=EmulatorConfig(latency_ms=20, fault_rate=FAULT_RATE, hang_ms=10_000, retry_after_s=1, seed=seed),
    )
    started = time.monotonic()
    with (
        LocalStack(config) as stack,
        httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.api_keys['dev']}"}, timeout=30
        ) as client,
    ):
        # Given 100 accepted jobs
        ids = []
        for i in range(JOBS):
            answer = client.post(
                "/v1/images/generations",
                json={"prompt": f"fault run {i}", "quality": "low", "size": "1024x1024", "n": 1 + i % 2},
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])

        # When the stack works through them under faults
        jobs: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            jobs = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in ids}
            if all(job["status"] in TERMINAL for job in jobs.values()):
                break
            time.sleep(1)
        stuck = [job_id for job_id, job in jobs.items() if job["status"] not in TERMINAL]
        assert not stuck, f"{len(stuck)} jobs never ended, e.g. {jobs[stuck[0]]}"

        # Then nothing is left on the queue once in-flight duplicates have been settled
        settle = time.monotonic() + 60
        while queue_depth(stack, "JobsQueue") and time.monotonic() < settle:
            time.sleep(1)
        assert queue_depth(stack, "JobsQueue") == 0

        # And every job ended once, with a manifest that agrees, and at most one successful generation
        assert stack.emulator is not None
        stats = stack.emulator.stats.as_dict()
        bucket = stack.template.attributes["OutputsBucket"]["Ref"]
        s3 = boto3.client("s3")
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for index, job_id in enumerate(ids):
            job = jobs[job_id]
            statuses[job["status"]] += 1
            made = stats["generations"].get(job_id, 0)
            assert made <= 1, f"{job_id} was generated {made} times"
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"outputs/dev/{job_id}/result.json")["Body"].read())
            assert manifest["status"] == job["status"]
            if job["status"] == "succeeded":
                assert made == 1 and len(job["outputs"]) == 1 + index % 2
                for output in job["outputs"]:
                    assert s3.head_object(Bucket=bucket, Key=output["key"])["ContentLength"] == output["bytes"]
            else:
                errors[job["error"]["code"]] += 1
                assert job["error"]["code"] in {"provider_unavailable", "rate_limited"}, job["error"]
        # The run really was faulty: every kind of fault happened
        assert set(stats["faults"]) == {"rate_limit", "server_error", "hang"}, stats["faults"]
        dead_letters = queue_depth(stack, "JobsDeadLetterQueue")
        assert dead_letters == 0
        duplicates = sum(poller.duplicates_sent for poller in stack.pollers)
        assert duplicates > 0

    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nfault run (seed {seed}): {JOBS} jobs in {elapsed:.1f} s -> {dict(statuses)}"
            f"{' failures ' + str(dict(errors)) if errors else ''}; provider calls {stats['calls']}, "
            f"faults {stats['faults']}; most generations for one job: "
            f"{max(stats['generations'].values(), default=0)}; duplicate deliveries {duplicates}; stuck 0; "
            f"dead-lettered {dead_letters}"
        )
