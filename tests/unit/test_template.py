"""template.yaml keeps the promises the code relies on (the deployable shape is checked by `make template`)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from darkroom.api.routes import router
from darkroom_local.template import REPO, LocalTemplate


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


def deployed_parameters(template: LocalTemplate) -> dict[str, dict[str, int]]:
    """Each samconfig.toml environment's numeric parameters: the template's defaults under its overrides."""
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    defaults = {k: v for k, v in template.parameters.items() if v.isdecimal()}
    environments = {}
    for name, commands in config.items():
        if not isinstance(commands, dict) or "deploy" not in commands:
            continue
        overrides = dict(
            o.split("=", 1) for o in commands["deploy"]["parameters"].get("parameter_overrides", "").split()
        )
        environments[name] = {k: int(v) for k, v in {**defaults, **overrides}.items() if v.isdecimal()}
    return environments


def test_worker_reserves_what_its_queues_may_run_in_every_environment(template: LocalTemplate) -> None:
    # CloudFormation rules cannot add or compare numbers, so the bound is kept here, for every deploy environment.
    dead_letters = int(
        props(template, "WorkerFunction")["Events"]["DeadLetters"]["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    )
    environments = deployed_parameters(template)
    assert {"default", "dev", "prod"} <= set(environments)
    for name, parameters in environments.items():
        needed = parameters["WorkerMaxConcurrency"] + dead_letters
        assert parameters["WorkerReservedConcurrency"] >= needed, f"{name}: SQS would be throttled"
    worker = props(template, "WorkerFunction")
    assert worker["ReservedConcurrentExecutions"] == {"Ref": "WorkerReservedConcurrency"}
    assert props(template, "ApiFunction")["ReservedConcurrentExecutions"] == {"Ref": "ApiReservedConcurrency"}


def test_every_alarm_notifies_the_alarm_topic_on_alarm_and_recovery(template: LocalTemplate) -> None:
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) >= 6
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Properties"]["OKActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"
    assert props(template, "AlarmTopic")["KmsMasterKeyId"] == {"Ref": "AlarmKey"}
    assert template.resources["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert template.parameters["AlarmEmail"] == ""
    assert template.doc["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}


def test_sweeper_alarm_watches_the_metric_as_powertools_publishes_it(template: LocalTemplate) -> None:
    env = template.doc["Globals"]["Function"]["Environment"]["Variables"]
    alarm = props(template, "JobsSweptAlarm")
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == ("JobsSwept", "Sum", 300)


def test_api_access_logs_and_function_logs_expire(template: LocalTemplate) -> None:
    assert props(template, "HttpApi")["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": ["HttpApiAccessLogs", "Arn"]
    }
    assert "authorization" not in props(template, "HttpApi")["AccessLogSettings"]["Format"].lower()
    for log_group in template.of_type("AWS::Logs::LogGroup").values():
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
