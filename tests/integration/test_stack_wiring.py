"""The local stack's wiring from template.yaml, including the switch to the real OpenAI API (no call is made)."""

from __future__ import annotations

import os

import boto3
import pytest

from darkroom.providers import registry
from darkroom_local.stack import OPENAI_BASE_URL, LocalStack, StackConfig


def test_openai_provider_uses_the_real_endpoint_and_the_key_from_secrets_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-wiring-only")
    with LocalStack(StackConfig(serve=False, provider="openai")) as stack:
        assert stack.emulator is None
        assert os.environ["PROVIDER_BASE_URL"] == OPENAI_BASE_URL
        assert registry.provider_for("gpt-image-2").base_url == OPENAI_BASE_URL
        # The key reaches the worker the way it does in AWS: through the template's secret
        assert registry.provider_api_key() == "sk-test-wiring-only"
    assert "PROVIDER_BASE_URL" not in os.environ or os.environ["PROVIDER_BASE_URL"] != OPENAI_BASE_URL


def test_openai_provider_without_a_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):
        LocalStack(StackConfig(serve=False, provider="openai")).start()


def test_resources_come_from_the_template() -> None:
    with LocalStack(StackConfig(serve=False, parameters={"JobsQueueVisibilitySeconds": "4000"})) as stack:
        sqs = boto3.client("sqs")
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack.template.attributes["JobsQueue"]["QueueUrl"], AttributeNames=["All"]
        )["Attributes"]
        assert attributes["VisibilityTimeout"] == "4000"
        assert '"maxReceiveCount": 5' in attributes["RedrivePolicy"]
        tables = boto3.client("dynamodb").list_tables()["TableNames"]
        assert set(tables) == {
            stack.template.attributes[t]["Ref"]
            for t in (
                "JobsTable",
                "ApiKeysTable",
                "IdempotencyTable",
                "WebhooksTable",
                "DeliveriesTable",
                "RoutesTable",
                "TenantsTable",
                "BatchesTable",
            )
        }
        worker = stack.functions["WorkerFunction"].spec
        assert worker.timeout_s == 600 and worker.sqs_events[0]["BatchSize"] == "1"


def test_a_provider_timeout_that_leaves_the_worker_no_time_is_refused_as_cloudformation_would() -> None:
    # Given a provider call as long as the worker may run (every job would be left for later, for hours)
    parameters = {"WorkerTimeoutSeconds": "300", "ProviderTimeoutSeconds": "300"}
    # When the local stack is asked to start with it / Then it refuses, naming the bound, before creating anything
    with pytest.raises(ValueError, match="With WorkerTimeoutSeconds 300, ProviderTimeoutSeconds must be at most 240"):
        LocalStack(StackConfig(serve=False, parameters=parameters))


def test_every_worker_timeout_the_template_allows_has_its_rule() -> None:
    from darkroom_local.template import LocalTemplate

    template = LocalTemplate()
    for worker in template.doc["Parameters"]["WorkerTimeoutSeconds"]["AllowedValues"]:
        for provider in template.doc["Parameters"]["ProviderTimeoutSeconds"]["AllowedValues"]:
            candidate = LocalTemplate({"WorkerTimeoutSeconds": str(worker), "ProviderTimeoutSeconds": str(provider)})
            fits = provider <= worker - 60
            try:
                candidate.check_rules()
                refused = False
            except ValueError:
                refused = True
            assert refused != fits, (worker, provider)
