"""Each function's role grants exactly the calls its code makes, on exactly its resources.

Read from the template as CloudFormation gets it, after the SAM transform, so whatever SAM adds to a role (policy
templates, the managed policies it attaches for event sources) is seen too. A new function fails here until its
grants are written down below.
"""

from __future__ import annotations

import json
import re
import subprocess
from fnmatch import fnmatchcase
from typing import Any

import pytest

from darkroom_local.template import REPO

TOOLS_PYTHON = REPO / ".venv-tools" / "bin" / "python"

POLLER_EXECUTIONS = (
    "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${PollerStateMachine.Name}:*"
)

# Named by the stack, so the batches function that starts its executions can hold its ARN without a cycle.
BATCH_POLLER = (
    "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-batch-poller"
)
BATCH_POLLER_EXECUTIONS = (
    "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-batch-poller:*"
)

# function -> resource -> actions. A resource is a logical id (its ARN), or a logical id and a path under it.
EXPECTED_GRANTS: dict[str, dict[str, set[str]]] = {
    "ApiFunction": {
        "ApiFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
        "JobsTable/index/*": {"dynamodb:Query"},
        "ApiKeysTable": {"dynamodb:GetItem"},
        "IdempotencyTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
        "JobsQueue": {"sqs:SendMessage"},
        "OutputsBucket/outputs/*": {"s3:PutObject", "s3:GetObject"},
        "OutputsBucket/inputs/*": {"s3:PutObject"},
        "OutputsBucket/uploads/*": {"s3:GetObject"},
        "OutputsBucket/uploads/*/jobs/*": {"s3:PutObject", "s3:DeleteObject"},
        "OutputsBucket": {"s3:ListBucket"},
        POLLER_EXECUTIONS: {"states:StopExecution"},
        "WebhooksTable": {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
        },
        "WebhookSecretsKey": {"kms:Encrypt", "kms:Decrypt"},
        "DeliveriesTable": {"dynamodb:Query", "dynamodb:UpdateItem"},
        "WebhookRetryQueue": {"sqs:SendMessage"},
        "TenantsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"},
        "BatchesTable": {"dynamodb:GetItem"},
    },
    "WorkerFunction": {
        "WorkerFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "JobsTable/index/by_cache_key": {"dynamodb:Query"},  # a cached job's sources
        "JobsQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"},
        "JobsDeadLetterQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        "OutputsBucket/outputs/*": {"s3:PutObject", "s3:GetObject"},
        "OutputsBucket/inputs/*": {"s3:GetObject"},
        "OutputsBucket": {"s3:ListBucket"},
        "ProviderSecret": {"secretsmanager:GetSecretValue"},
        "GatewaySecret": {"secretsmanager:GetSecretValue"},
        "WaveSpeedSecret": {"secretsmanager:GetSecretValue"},
        "PollerStateMachine": {"states:StartExecution"},
        "RoutesTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "TenantsTable": {"dynamodb:UpdateItem"},
    },
    "SweeperFunction": {
        "SweeperFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "JobsTable/index/by_sweep": {"dynamodb:Query"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "JobsQueue": {"sqs:SendMessage"},
        "OutputsBucket/outputs/*": {"s3:PutObject", "s3:GetObject"},
        "OutputsBucket": {"s3:ListBucket"},
        "PollerStateMachine": {"states:StartExecution"},
        POLLER_EXECUTIONS: {"states:DescribeExecution", "states:StopExecution"},
        BATCH_POLLER_EXECUTIONS: {"states:DescribeExecution"},
        "OutputsBucket/uploads/*/jobs/*": {"s3:DeleteObject"},
        "UploadsQueue": {"sqs:SendMessage"},
        "WaveSpeedSecret": {"secretsmanager:GetSecretValue"},
        "TenantsTable": {"dynamodb:UpdateItem"},
    },
    "NotifyFunction": {
        "NotifyFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "OutputsBucket/outputs/*": {"s3:GetObject"},
        "OutputsBucket": {"s3:ListBucket"},
        "WebhooksTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"},
        "WebhookSecretsKey": {"kms:Encrypt", "kms:Decrypt"},
        "DeliveriesTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "CompletionsQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        "WebhookRetryQueue": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:SendMessage",
        },
    },
    "UploadsFunction": {
        "UploadsFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "OutputsBucket/uploads/*": {"s3:GetObject"},
        "OutputsBucket/uploads/*/drop/*": {"s3:PutObject"},
        "OutputsBucket/uploads/*/jobs/*": {"s3:DeleteObject"},
        "OutputsBucket": {"s3:ListBucket"},
        "OutputsBucket/inputs/*": {"s3:PutObject"},
        "OutputsBucket/outputs/*": {"s3:GetObject", "s3:PutObject"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
        "IdempotencyTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
        "JobsQueue": {"sqs:SendMessage"},
        "UploadsQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        "TenantsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    },
    "PollerFunction": {
        "PollerFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "OutputsBucket/outputs/*": {"s3:PutObject"},
        "WaveSpeedSecret": {"secretsmanager:GetSecretValue"},
        "TenantsTable": {"dynamodb:UpdateItem"},
    },
    "BatchesFunction": {
        "BatchesFunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "JobsTable/index/by_batch_queue": {"dynamodb:Query"},
        "BatchesTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "BatchesTable/index/by_pending": {"dynamodb:Query"},
        "TenantsTable": {"dynamodb:UpdateItem"},
        "OutputsBucket/outputs/*": {"s3:PutObject"},
        "OutputsBucket/inputs/*": {"s3:GetObject"},
        "ProviderSecret": {"secretsmanager:GetSecretValue"},
        BATCH_POLLER: {"states:StartExecution"},
    },
}

# What the review found granted, and nothing in darkroom does: none may come back, not even through a wildcard.
NEVER_GRANTED = [
    "dynamodb:Scan",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteTable",
    "s3:PutObjectAcl",
    "s3:PutBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutLifecycleConfiguration",
    "iam:PassRole",
]

# Types whose Ref is their ARN; any other Ref in a policy is a name or a URL, which IAM would never match.
REF_IS_ARN = {"AWS::SecretsManager::Secret", "AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"}


@pytest.fixture(scope="module")
def cfn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """template.yaml through the SAM transform, built afresh so the test never reads a stale build."""
    if not TOOLS_PYTHON.exists():
        pytest.fail("the template tooling environment is missing: run `make template` once to create it")
    target = tmp_path_factory.mktemp("template") / "template.cfn.json"
    done = subprocess.run(
        [str(TOOLS_PYTHON), "local/transform_template.py", "template.yaml", str(target)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the SAM transform failed:\n{done.stderr}")
    return dict(json.loads(target.read_text()))


def functions(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def role_of(cfn: dict[str, Any], function_id: str) -> str:
    role = functions(cfn)[function_id]["Properties"]["Role"]
    assert "Fn::GetAtt" in role, f"{function_id} must use a role of this stack, not {role}"
    return str(role["Fn::GetAtt"][0])


def statements(cfn: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every statement that applies to the role: its inline policies and any policy resource attached to it."""
    resources = cfn["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role_id]["Properties"].get("Policies", [])]
    for resource in resources.values():
        attached = {"Ref": role_id} in resource.get("Properties", {}).get("Roles", [])
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and attached:
            documents.append(resource["Properties"]["PolicyDocument"])
    return [s for document in documents for s in as_list(document["Statement"])]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_name(cfn: dict[str, Any], resource: Any) -> str:
    """A policy's resource as it is written in EXPECTED_GRANTS: `JobsTable`, `JobsTable/index/*`, or `*`."""
    if isinstance(resource, str):
        return resource
    if "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn", f"a policy resource must be an ARN, not {logical_id}.{attribute}"
        return str(logical_id)
    if "Ref" in resource:
        logical_id = resource["Ref"]
        assert cfn["Resources"][logical_id]["Type"] in REF_IS_ARN, f"Ref {logical_id} is not an ARN"
        return str(logical_id)
    if "Fn::Sub" in resource and isinstance(resource["Fn::Sub"], str):
        return re.sub(r"\$\{(\w+)\.Arn\}", r"\1", resource["Fn::Sub"])
    raise AssertionError(f"write {resource} as !GetAtt X.Arn, !Ref X or !Sub '${{X.Arn}}/...'")


def grants(cfn: dict[str, Any], function_id: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for statement in statements(cfn, role_of(cfn, function_id)):
        for resource in as_list(statement["Resource"]):
            found.setdefault(resource_name(cfn, resource), set()).update(as_list(statement["Action"]))
    return found


def test_every_function_has_its_grants_written_down(cfn: dict[str, Any]) -> None:
    assert set(functions(cfn)) == set(EXPECTED_GRANTS)


@pytest.mark.parametrize("function_id", sorted(EXPECTED_GRANTS))
def test_role_grants_exactly_what_the_function_does(cfn: dict[str, Any], function_id: str) -> None:
    assert grants(cfn, function_id) == EXPECTED_GRANTS[function_id]


@pytest.mark.parametrize("function_id", sorted(EXPECTED_GRANTS))
def test_role_has_no_wildcard_actions_no_forbidden_actions_and_no_resource_star(
    cfn: dict[str, Any], function_id: str
) -> None:
    for statement in statements(cfn, role_of(cfn, function_id)):
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource"} & set(statement), statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{function_id}: wildcard action {action}"
            assert not any(fnmatchcase(never.lower(), action.lower()) for never in NEVER_GRANTED), action
        for resource in as_list(statement["Resource"]):
            assert resource_name(cfn, resource) != "*", f"{function_id}: {statement['Action']} on every resource"


@pytest.mark.parametrize("function_id", sorted(EXPECTED_GRANTS))
def test_role_carries_no_managed_policy_and_only_lambda_may_assume_it(cfn: dict[str, Any], function_id: str) -> None:
    # Managed policies grant on every resource: SAM attaches one to the roles it generates for SQS events.
    role = cfn["Resources"][role_of(cfn, function_id)]["Properties"]
    assert not role.get("ManagedPolicyArns")
    assert not role.get("PermissionsBoundary")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert as_list(trust["Action"]) == ["sts:AssumeRole"]


@pytest.mark.parametrize("function_id", sorted(EXPECTED_GRANTS))
def test_bucket_listing_is_limited_to_outputs_and_uploads(cfn: dict[str, Any], function_id: str) -> None:
    listing = [s for s in statements(cfn, role_of(cfn, function_id)) if "s3:ListBucket" in as_list(s["Action"])]
    for statement in listing:
        assert as_list(statement["Action"]) == ["s3:ListBucket"]
        assert set(as_list(statement["Condition"]["StringLike"]["s3:prefix"])) <= {"outputs/*", "uploads/*", "inputs/*"}
        assert set(statement["Condition"]) == {"StringLike"}


@pytest.mark.parametrize("function_id", sorted(EXPECTED_GRANTS))
def test_only_uploads_in_transit_may_be_deleted(cfn: dict[str, Any], function_id: str) -> None:
    # Outputs and inputs are written once and expire by the bucket's lifecycle; only uploads, once copied to a
    # job's inputs (or refused, or expired), are removed by darkroom itself.
    for statement in statements(cfn, role_of(cfn, function_id)):
        if any(fnmatchcase("s3:deleteobject", action.lower()) for action in as_list(statement["Action"])):
            for resource in as_list(statement["Resource"]):
                assert resource_name(cfn, resource).startswith("OutputsBucket/uploads/*/jobs/"), resource


def test_worker_polls_exactly_the_queues_its_event_sources_read(cfn: dict[str, Any]) -> None:
    polled = {
        resource_name(cfn, r["Properties"]["EventSourceArn"])
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "WorkerFunction"}
    }
    receivable = {name for name, actions in grants(cfn, "WorkerFunction").items() if "sqs:ReceiveMessage" in actions}
    assert polled == receivable == {"JobsQueue", "JobsDeadLetterQueue"}


def test_functions_log_only_to_their_own_log_groups(cfn: dict[str, Any]) -> None:
    for function_id, function in functions(cfn).items():
        own = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert cfn["Resources"][own]["Type"] == "AWS::Logs::LogGroup"
        logged_to = {name for name, actions in grants(cfn, function_id).items() if "logs:PutLogEvents" in actions}
        assert logged_to == {own}


def test_the_poller_state_machine_may_only_invoke_the_poller(cfn: dict[str, Any]) -> None:
    machine = cfn["Resources"]["PollerStateMachine"]["Properties"]
    role = cfn["Resources"][machine["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    (statement,) = [s for p in role["Policies"] for s in as_list(p["PolicyDocument"]["Statement"])]
    assert as_list(statement["Action"]) == ["lambda:InvokeFunction"]
    assert {resource_name(cfn, r) for r in statement["Resource"]} == {"PollerFunction", "PollerFunction:*"}
