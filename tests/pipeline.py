"""Driving a stack's functions by hand, as API Gateway and Lambda's SQS mapping would: submit, receive, deliver."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from darkroom.jobs.store import Job, JobStore
from darkroom_local.pollers import sqs_record
from darkroom_local.stack import LocalStack
from tests.support import http_event, response_json


def queue_url(stack: LocalStack, name: str = "JobsQueue") -> str:
    return stack.template.attributes[name]["QueueUrl"]


def submit(stack: LocalStack, **body: Any) -> str:
    event = http_event(
        "POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body={"prompt": "a cat", **body}
    )
    response = stack.functions["ApiFunction"].invoke(event)
    assert response["statusCode"] == 202, response["body"]
    return str(response_json(response)["id"])


def receive(stack: LocalStack, name: str = "JobsQueue", wait_s: int = 0) -> list[dict[str, Any]]:
    messages = boto3.client("sqs").receive_message(
        QueueUrl=queue_url(stack, name), MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, AttributeNames=["All"]
    )
    return list(messages.get("Messages", []))


def deliver(stack: LocalStack, messages: list[dict[str, Any]], name: str = "JobsQueue") -> dict[str, Any]:
    """Invoke the worker as Lambda's event source mapping would, deleting the records that succeeded."""
    arn = stack.template.attributes[name]["Arn"]
    result = dict(stack.functions["WorkerFunction"].invoke({"Records": [sqs_record(m, arn) for m in messages]}))
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            boto3.client("sqs").delete_message(QueueUrl=queue_url(stack, name), ReceiptHandle=message["ReceiptHandle"])
    return result


def job(job_id: str) -> Job:
    found = JobStore().get(job_id)
    assert found is not None
    return found


def generations(stack: LocalStack, job_id: str) -> int:
    assert stack.emulator is not None
    return int(stack.emulator.stats.generations.get(job_id, 0))


def manifest(stack: LocalStack, found: Job) -> dict[str, Any]:
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"outputs/{found.tenant}/{found.id}/result.json")["Body"]
    return dict(json.loads(body.read()))


def faults(stack: LocalStack, *kinds: str) -> None:
    assert stack.emulator is not None
    stack.emulator.config.fault_rate = 1.0
    stack.emulator.config.fault_kinds = kinds


def submissions(stack: LocalStack, prompt: str) -> int:
    """Submissions the emulator's WaveSpeed side took (and billed) for this prompt."""
    assert stack.emulator is not None
    count = stack.emulator.stats.prompts.get(prompt)
    return count.submissions if count else 0


def execution(
    stack: LocalStack, job_id: str, *, timeout_s: float = 30.0, machine_name: str = "PollerStateMachine"
) -> dict[str, Any]:
    """The job's (or a batch's) poller execution once it has ended (moto's executor runs it in real time), with its
    history."""
    sfn = boto3.client("stepfunctions")
    machine = stack.template.attributes[machine_name]["Arn"]
    arn = machine.replace(":stateMachine:", ":execution:") + ":" + job_id
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            break
        assert time.monotonic() < deadline, f"execution {job_id} still running after {timeout_s} s"
        time.sleep(0.1)
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {"status": described["status"], "events": events}


def transitions(history: dict[str, Any]) -> list[str]:
    """The states the execution entered, in order: what Step Functions bills as state transitions."""
    entered = [e for e in history["events"] if e["type"].endswith("StateEntered")]
    return [next(v for k, v in e.items() if k.endswith("EventDetails"))["name"] for e in entered]


def sdk_edit_event(stack: LocalStack, tenant: str = "dev", **edit: Any) -> dict[str, Any]:
    """The API Gateway event of `openai.images.edit(**edit)` exactly as the official SDK sends it: multipart, with
    the body base64-encoded as API Gateway passes binary bodies on."""
    import base64

    import httpx2  # the SDK's own HTTP client package
    import openai

    captured: list[httpx2.Request] = []

    def capture(request: httpx2.Request) -> httpx2.Response:
        captured.append(request)
        return httpx2.Response(202, json={"created": 0, "data": []})

    client = openai.OpenAI(
        base_url="https://darkroom.example/v1",
        api_key=stack.api_keys[tenant],
        http_client=httpx2.Client(transport=httpx2.MockTransport(capture)),
        max_retries=0,
    )
    client.images.edit(**edit)
    request = captured[0]
    body = request.read()
    event = http_event("POST", "/v1/images/edits", api_key=stack.api_keys[tenant])
    event["headers"].update(
        {"content-type": request.headers["content-type"], "user-agent": request.headers["user-agent"]}
    )
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    return event


def call_api(stack: LocalStack, event: dict[str, Any]) -> tuple[int, Any]:
    response = stack.functions["ApiFunction"].invoke(event)
    return response["statusCode"], response_json(response)


def stored_image(stack: LocalStack, key: str) -> Any:
    """An object of the outputs bucket, opened with Pillow."""
    import io

    from PIL import Image

    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    return Image.open(io.BytesIO(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()))
