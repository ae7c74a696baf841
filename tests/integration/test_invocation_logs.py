"""Invocations side by side in one process, as the local stack runs them: every log record names its own invocation.

In AWS each execution environment runs one invocation at a time, so powertools' Logger state is one invocation's
state; locally every function shares one Logger across threads, and the local stack must keep them apart.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest

from darkroom.observability import logger
from darkroom_local.lambdas import LambdaContext, LocalFunction
from darkroom_local.pollers import sqs_record
from darkroom_local.stack import LocalStack
from darkroom_local.template import FunctionSpec
from tests.pipeline import queue_url, receive, submit
from tests.support import drain, http_event

JOBS = 5
JOIN_TIMEOUT_S = 60


@dataclass
class Invocation:
    function_name: str
    context: LambdaContext | None = None
    correlation_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def capture_records(by_thread: dict[str, list[dict[str, Any]]]) -> Iterator[None]:
    """Every record of darkroom's logger, formatted as powertools writes it, by the name of the thread that logged."""
    darkroom_logger = logging.getLogger(logger.name)
    formatter = darkroom_logger.handlers[0].formatter
    assert formatter is not None
    json_format: logging.Formatter = formatter
    lock = threading.Lock()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = json.loads(json_format.format(record))  # formatted in the logging thread, as powertools' own
            with lock:
                by_thread.setdefault(record.threadName or "", []).append(line)

    capture, saved_level = Capture(level=logging.INFO), darkroom_logger.level
    darkroom_logger.addHandler(capture)
    darkroom_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        darkroom_logger.removeHandler(capture)
        darkroom_logger.setLevel(saved_level)


@pytest.fixture
def records() -> Iterator[dict[str, list[dict[str, Any]]]]:
    by_thread: dict[str, list[dict[str, Any]]] = {}
    with capture_records(by_thread):
        yield by_thread


def side_by_side(calls: dict[str, Callable[[], Any]]) -> None:
    """Run each call on its own thread, named by its key, all released at once; re-raise the first failure."""
    start = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=JOIN_TIMEOUT_S)
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,), name=name) for name, call in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive(), f"{thread.name} still running"
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def api_and_worker_side_by_side(stack: LocalStack) -> dict[str, Invocation]:
    """Five job submissions and five worker deliveries of earlier jobs, ten invocations at once, by thread name."""
    assert stack.emulator is not None
    drain(queue_url(stack))
    for _ in range(JOBS):
        submit(stack)
    messages = receive(stack)
    assert len(messages) == JOBS
    api, worker = stack.functions["ApiFunction"], stack.functions["WorkerFunction"]
    arn = stack.template.attributes["JobsQueue"]["Arn"]
    invocations: dict[str, Invocation] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for index, message in enumerate(messages):
        invocations[f"worker-{index}"] = Invocation("WorkerFunction")
        calls[f"worker-{index}"] = partial(worker.invoke, {"Records": [sqs_record(message, arn)]})
    for index in range(JOBS):
        request_id = f"api-request-{index}"
        event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body={"prompt": "a cat"})
        event["requestContext"]["requestId"] = request_id
        invocations[f"api-{index}"] = Invocation("ApiFunction", correlation_id=request_id)
        calls[f"api-{index}"] = partial(api.invoke, event)

    def recording(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def record_context(event: Any, context: LambdaContext) -> Any:
            invocations[threading.current_thread().name].context = context
            return handler(event, context)

        return record_context

    by_thread: dict[str, list[dict[str, Any]]] = {}
    # Provider latency keeps the workers' invocations open while the api's run.
    stack.emulator.config.latency_ms = 200
    try:
        with pytest.MonkeyPatch.context() as patch, capture_records(by_thread):
            patch.setattr(api, "handler", recording(api.handler))
            patch.setattr(worker, "handler", recording(worker.handler))
            side_by_side(calls)
    finally:
        stack.emulator.config.latency_ms = 0
    sqs = boto3.client("sqs")
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url(stack), ReceiptHandle=message["ReceiptHandle"])
    drain(queue_url(stack))
    for name, invocation in invocations.items():
        invocation.records = by_thread.get(name, [])
        assert invocation.context is not None and invocation.records, f"{name} ran and logged"
    return invocations


def test_every_record_of_concurrent_invocations_names_its_own_function(
    api_and_worker_side_by_side: dict[str, Invocation],
) -> None:
    # Given api and worker invocations running at the same time (fixture)
    for name, invocation in api_and_worker_side_by_side.items():
        # When their records are read back
        names = {record.get("function_name") for record in invocation.records}
        # Then each names the function that logged it
        assert names == {invocation.function_name}, name


def test_every_record_of_concurrent_invocations_carries_its_own_request_id(
    api_and_worker_side_by_side: dict[str, Invocation],
) -> None:
    # Given ten invocations running at the same time (fixture)
    seen: set[str] = set()
    for name, invocation in api_and_worker_side_by_side.items():
        assert invocation.context is not None
        # When their records are read back
        ids = {record.get("function_request_id") for record in invocation.records}
        # Then each carries its own invocation's request id, which no other invocation shares
        assert ids == {invocation.context.aws_request_id}, name
        seen |= {invocation.context.aws_request_id}
    assert len(seen) == len(api_and_worker_side_by_side)


def test_api_records_carry_their_own_correlation_id_and_worker_records_none(
    api_and_worker_side_by_side: dict[str, Invocation],
) -> None:
    # Given api invocations correlated by their requests' ids beside worker invocations, which correlate nothing
    for name, invocation in api_and_worker_side_by_side.items():
        # When their records are read back
        correlations = {record.get("correlation_id") for record in invocation.records}
        # Then an api record carries its own request's id and a worker record no correlation id at all
        assert correlations == {invocation.correlation_id}, name


# A handler written as darkroom's are; its event may hold a callable run between appending a key and logging.
PROBE = """
from darkroom.observability import logger, metrics

logger.append_keys(deployment="probe")  # at import time, outside any invocation, as module code may


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event, context):
    if "tenant" in event:
        logger.append_keys(tenant=event["tenant"])
    event.get("between", lambda: None)()
    logger.info("probe")
    return {}
"""


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[LocalFunction]:
    (tmp_path / "app.py").write_text(PROBE)
    yield LocalFunction(FunctionSpec("ProbeFunction", tmp_path, "app.lambda_handler", 10, {}))
    logger.remove_keys(["deployment"])


def test_keys_appended_in_an_invocation_stay_in_it(
    probe: LocalFunction, records: dict[str, list[dict[str, Any]]]
) -> None:
    # Given two invocations that each append a tenant, and log only once both have appended theirs
    a_appended, b_appended = threading.Event(), threading.Event()

    def a_waits_for_b() -> None:
        a_appended.set()
        b_appended.wait(10)

    def a() -> None:
        probe.invoke({"tenant": "a", "between": a_waits_for_b})

    def b() -> None:
        a_appended.wait(10)
        probe.invoke({"tenant": "b", "between": b_appended.set})

    # When they run side by side
    side_by_side({"a": a, "b": b})
    # Then each record carries the tenant its own invocation appended
    assert [record.get("tenant") for record in records["a"]] == ["a"]
    assert [record.get("tenant") for record in records["b"]] == ["b"]


def test_keys_appended_in_an_invocation_do_not_reach_the_next(
    probe: LocalFunction, records: dict[str, list[dict[str, Any]]]
) -> None:
    # Given an invocation that appended a tenant
    side_by_side({"first": lambda: probe.invoke({"tenant": "a"})})
    # When another invocation of the same function logs without appending one
    side_by_side({"second": lambda: probe.invoke({})})
    # Then its record has no tenant: it starts as a fresh execution environment would
    assert [record.get("tenant") for record in records["first"]] == ["a"]
    assert [record.get("tenant") for record in records["second"]] == [None]


def test_keys_appended_at_import_time_reach_every_invocation(
    probe: LocalFunction, records: dict[str, list[dict[str, Any]]]
) -> None:
    # Given a handler module that appended a key when it was imported (the probe fixture)
    # When two invocations log side by side
    side_by_side({"one": lambda: probe.invoke({}), "two": lambda: probe.invoke({})})
    # Then both records carry it, as every invocation of a Lambda execution environment would
    assert [record.get("deployment") for record in records["one"] + records["two"]] == ["probe", "probe"]
