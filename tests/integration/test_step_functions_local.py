"""The local stack's Step Functions hook: moto's executor calls Lambda, and the template's functions answer in-process.

The hook replaces one private method of moto (`LambdaBackend.invoke`). These tests fail loudly when a moto upgrade
moves or reshapes it, instead of letting state machines silently run nothing.
"""

from __future__ import annotations

import inspect
import json

import boto3
import moto
import pytest
from moto.awslambda.models import LambdaBackend

from darkroom_local import step_functions
from darkroom_local.stack import LocalStack
from tests.support import load_event


def test_the_hook_is_written_for_the_pinned_moto() -> None:
    assert moto.__version__ == step_functions.MOTO_VERSION


def test_the_hook_refuses_another_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"written for moto 5\.2\.5"):
        step_functions.install({})


def test_the_method_it_replaces_still_has_the_shape_it_was_written_for(stack: LocalStack) -> None:
    assert LambdaBackend.invoke is step_functions._invoke
    original = inspect.signature(step_functions._original_invoke)
    assert list(original.parameters) == ["self", "function_name", "qualifier", "body", "headers", "response_headers"]


def test_a_lambda_invocation_of_a_template_function_runs_its_handler(stack: LocalStack) -> None:
    arn = stack.template.attributes["PollerFunction"]["Arn"]
    # The sample event `sam local invoke PollerFunction -e events/poller_poll.json` sends, naming no stored job
    answer = boto3.client("lambda").invoke(FunctionName=arn, Payload=json.dumps(load_event("poller_poll")))
    assert "FunctionError" not in answer
    assert json.loads(answer["Payload"].read())["done"] is True  # no such job: nothing to poll


def test_a_handlers_exception_comes_back_as_lambda_reports_it(stack: LocalStack) -> None:
    arn = stack.template.attributes["PollerFunction"]["Arn"]
    answer = boto3.client("lambda").invoke(FunctionName=arn, Payload=b"{}")
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "ValueError"
