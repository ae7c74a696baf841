"""Create template.yaml's AWS resources in moto, and record each one's Ref and attributes for the template."""

from __future__ import annotations

import json
from typing import Any

import boto3

from darkroom_local.template import REPO, LocalTemplate

PREFIX = "darkroom-local"
# Types the local stack knows how to stand up; the rest are named here so a new type in the template fails loudly.
_NOT_NEEDED_LOCALLY = {
    "AWS::Serverless::LayerVersion",  # the darkroom package is importable as it is
    "AWS::S3::BucketPolicy",  # moto does not enforce bucket policies
    "AWS::SQS::QueuePolicy",  # nor queue policies
    "AWS::SNS::Subscription",  # no alarm mail leaves the machine
    "AWS::CloudWatch::Alarm",  # local metrics go to the terminal as EMF lines: CloudWatch would never see them
}


def create_resources(template: LocalTemplate, *, secrets: dict[str, str]) -> None:
    """Every resource of the template, in moto or as what names it; `secrets` holds each secret's value by logical
    id (a provider key)."""
    region = template.pseudo["AWS::Region"]
    account = template.pseudo["AWS::AccountId"]
    resources = template.resources
    unknown = {r["Type"] for r in resources.values()} - _NOT_NEEDED_LOCALLY - set(_CREATORS)
    if unknown:
        raise NotImplementedError(f"the local stack cannot create {sorted(unknown)} yet")
    # Queues first without redrive (a queue may name its dead-letter queue), state machines last (they name functions
    # and roles), everything else between.
    first, last = ("AWS::SQS::Queue",), ("AWS::Serverless::StateMachine",)
    ordered = sorted(resources.items(), key=lambda item: (item[1]["Type"] not in first) + (item[1]["Type"] in last))
    for logical_id, resource in ordered:
        creator = _CREATORS.get(resource["Type"])
        if creator:
            creator(template, logical_id, resource.get("Properties", {}), region, account, secrets.get(logical_id, ""))
    for logical_id, resource in template.of_type("AWS::SQS::Queue").items():
        redrive = resource.get("Properties", {}).get("RedrivePolicy")
        if redrive:
            boto3.client("sqs").set_queue_attributes(
                QueueUrl=template.attributes[logical_id]["Ref"],
                Attributes={"RedrivePolicy": json.dumps(template.resolve(redrive))},
            )


def _name(logical_id: str) -> str:
    return f"{PREFIX}-{logical_id}"


def _table(template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str) -> None:
    name = _name(logical_id)
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    boto3.client("dynamodb").create_table(**args)
    template.attributes[logical_id] = {"Ref": name, "Arn": f"arn:aws:dynamodb:{region}:{account}:table/{name}"}


def _queue(template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str) -> None:
    name = _name(logical_id)
    attributes = {
        key: str(template.resolve(props[key]))
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
        if key in props
    }
    url = boto3.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    template.attributes[logical_id] = {
        "Ref": url,
        "QueueUrl": url,
        "QueueName": name,
        "Arn": f"arn:aws:sqs:{region}:{account}:{name}",
    }


def _bucket(template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str) -> None:
    name = _name(logical_id).lower()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    if "BucketEncryption" in props:
        rules = [
            {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}  # CFN and S3 name it apart
            for rule in template.resolve(props["BucketEncryption"]["ServerSideEncryptionConfiguration"])
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=template.resolve(props["PublicAccessBlockConfiguration"])
        )
    notifications = template.resolve(props.get("NotificationConfiguration", {})).get("QueueConfigurations", [])
    if notifications:
        # CloudFormation's shape to S3's: moto's server then sends each matching event to its own SQS queue.
        s3.put_bucket_notification_configuration(
            Bucket=name,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": rule["Queue"],
                        "Events": [rule["Event"]],
                        "Filter": {"Key": {"FilterRules": rule.get("Filter", {}).get("S3Key", {}).get("Rules", [])}},
                    }
                    for rule in notifications
                ]
            },
        )
    if "CorsConfiguration" in props:
        # CloudFormation's names for S3's: CorsRules is CORSRules, MaxAge is MaxAgeSeconds, Id is ID.
        renamed = {"MaxAge": "MaxAgeSeconds", "Id": "ID"}
        rules = [
            {renamed.get(k, k): v for k, v in rule.items()}
            for rule in template.resolve(props["CorsConfiguration"])["CorsRules"]
        ]
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
    template.attributes[logical_id] = {"Ref": name, "Arn": f"arn:aws:s3:::{name}"}


def _secret(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, value: str
) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name=_name(logical_id), SecretString=value or "unset")["ARN"]
    template.attributes[logical_id] = {"Ref": arn, "Id": arn}


def _http_api(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str
) -> None:
    template.attributes[logical_id] = {"Ref": "local", "ApiEndpoint": "http://127.0.0.1"}


def _log_group(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str
) -> None:
    # Local functions log to the terminal; the group exists so what names it (the API's access logs) resolves.
    name = f"/{PREFIX}/{logical_id}"
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=name)
    if "RetentionInDays" in props:
        logs.put_retention_policy(logGroupName=name, retentionInDays=int(template.resolve(props["RetentionInDays"])))
    template.attributes[logical_id] = {"Ref": name, "Arn": f"arn:aws:logs:{region}:{account}:log-group:{name}:*"}


def _topic(template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str) -> None:
    arn = boto3.client("sns").create_topic(Name=_name(logical_id))["TopicArn"]
    template.attributes[logical_id] = {"Ref": arn, "TopicArn": arn, "TopicName": _name(logical_id)}


def _function(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str
) -> None:
    # Run in-process by the stack (and by state machines, through darkroom_local.step_functions): only named here.
    name = _name(logical_id)
    template.attributes[logical_id] = {"Ref": name, "Arn": f"arn:aws:lambda:{region}:{account}:function:{name}"}


def _role(template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str) -> None:
    # moto does not enforce IAM: the functions run with the stack's own credentials. A role is only its ARN here.
    name = _name(logical_id)
    template.attributes[logical_id] = {"Ref": name, "Arn": f"arn:aws:iam::{account}:role/{name}"}


def _state_machine(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str
) -> None:
    """The definition file as `sam deploy` sends it, with its DefinitionSubstitutions applied."""
    definition = (REPO / props["DefinitionUri"]).read_text()
    for name, value in template.resolve(props.get("DefinitionSubstitutions", {})).items():
        definition = definition.replace("${" + name + "}", str(value))
    # Named as the template names it (a function given the ARN through a Sub finds it), else as CloudFormation would.
    name = str(template.resolve(props["Name"])) if "Name" in props else _name(logical_id)
    arn = boto3.client("stepfunctions").create_state_machine(
        name=name,
        definition=definition,
        roleArn=str(template.resolve(props["Role"])),
        type=props.get("Type", "STANDARD"),
    )["stateMachineArn"]
    template.attributes[logical_id] = {"Ref": arn, "Arn": arn, "Name": name}


def _kms_key(
    template: LocalTemplate, logical_id: str, props: dict[str, Any], region: str, account: str, _: str
) -> None:
    key = boto3.client("kms").create_key(Description=str(template.resolve(props.get("Description", ""))))["KeyMetadata"]
    template.attributes[logical_id] = {"Ref": key["KeyId"], "Arn": key["Arn"]}


_CREATORS = {
    "AWS::KMS::Key": _kms_key,
    "AWS::Serverless::Function": _function,
    "AWS::IAM::Role": _role,
    "AWS::Serverless::StateMachine": _state_machine,
    "AWS::DynamoDB::Table": _table,
    "AWS::SQS::Queue": _queue,
    "AWS::S3::Bucket": _bucket,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::Serverless::HttpApi": _http_api,
    "AWS::SNS::Topic": _topic,
    "AWS::Logs::LogGroup": _log_group,
}
