"""template.yaml keeps the promises the code relies on (the deployable shape is checked by `make template`)."""

from __future__ import annotations

from typing import Any

import pytest

from darkroom.api.routes import router
from darkroom_local.template import LocalTemplate


@pytest.fixture(scope="module")
def template() -> LocalTemplate:
    return LocalTemplate()


def props(template: LocalTemplate, logical_id: str) -> dict[str, Any]:
    return dict(template.resources[logical_id]["Properties"])


def test_jobs_queue_visibility_is_six_times_the_worker_timeout(template: LocalTemplate) -> None:
    visibility = int(template.parameters["JobsQueueVisibilitySeconds"])
    assert visibility >= 6 * int(template.parameters["WorkerTimeoutSeconds"])
    assert int(template.parameters["ProviderTimeoutSeconds"]) < int(template.parameters["WorkerTimeoutSeconds"])


def test_jobs_queue_dead_letters_after_at_least_five_receives(template: LocalTemplate) -> None:
    redrive = props(template, "JobsQueue")["RedrivePolicy"]
    assert redrive["maxReceiveCount"] >= 5
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}


def test_worker_reports_partial_batch_failures_within_a_concurrency_cap(template: LocalTemplate) -> None:
    for event in props(template, "WorkerFunction")["Events"].values():
        assert event["Type"] == "SQS"
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert "MaximumConcurrency" in event["Properties"]["ScalingConfig"]


def test_functions_run_on_arm64_with_a_current_python(template: LocalTemplate) -> None:
    function_globals = template.doc["Globals"]["Function"]
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Runtime"] in ("python3.13", "python3.14")


def test_bucket_is_private_encrypted_and_expires_outputs(template: LocalTemplate) -> None:
    bucket = props(template, "OutputsBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("Prefix") == "outputs/" and "ExpirationInDays" in rule for rule in rules)


def test_every_api_route_is_wired_in_the_template_and_back(template: LocalTemplate) -> None:
    wired = {
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
        for e in props(template, "ApiFunction")["Events"].values()
    }
    assert wired == {(route.method, route.template) for route in router.routes}


def test_provider_key_comes_from_secrets_manager(template: LocalTemplate) -> None:
    env = props(template, "WorkerFunction")["Environment"]["Variables"]
    assert env["PROVIDER_SECRET_ARN"] == {"Ref": "ProviderSecret"}
    assert template.resources["ProviderSecret"]["Type"] == "AWS::SecretsManager::Secret"
