"""Helpers shared by the tests: sample events, and requests built from them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def http_event(
    method: str,
    path: str,
    *,
    api_key: str | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API event shaped like events/api_get_job.json, for any route."""
    event = copy.deepcopy(load_event("api_get_job"))
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["headers"] = {"host": "abc123.execute-api.us-east-1.amazonaws.com", **(headers or {})}
    event.pop("pathParameters", None)
    if api_key is not None:
        event["headers"]["authorization"] = f"Bearer {api_key}"
    if body is not None or raw_body is not None:
        event["headers"].setdefault("content-type", "application/json")
        event["body"] = raw_body if raw_body is not None else json.dumps(body)
    if query:
        event["queryStringParameters"] = query
    return event


def response_json(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def drain(queue_url: str) -> int:
    """Delete every visible message (moto, like SQS, allows one PurgeQueue a minute)."""
    import boto3

    sqs = boto3.client("sqs")
    count = 0
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages")
        if not messages:
            return count
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        count += len(messages)
