"""darkroom.ledger: counting a step's AWS requests and time, and pricing them from the dated table."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from darkroom import ledger
from darkroom.webhooks.events import event_body


def operation(service: str, name: str) -> Any:
    return SimpleNamespace(name=name, service_model=SimpleNamespace(service_name=service))


def test_prices_a_known_bill_to_the_nano_dollar() -> None:
    use = {
        "lambda_mb_ms": 1024 * 1000,  # one GB-second
        "lambda_requests": 1_000_000,
        "apigw_requests": 1_000_000,
        "sqs_requests": 1_000_000,
        "dynamodb_read_units": 1_000_000,
        "dynamodb_write_units": 1_000_000,
        "s3_write_requests": 1000,
        "s3_read_requests": 1000,
        "sfn_transitions": 1000,
        "s3_bytes_stored": 1024**3,
    }
    # 0.0000133334 + 0.20 + 1.00 + 0.40 + 0.125 + 0.625 + 0.005 + 0.0004 + 0.025 + 0.023 (a GB for a month)
    expected = Decimal("2.4034133334")
    assert ledger.aws_usd(use, retention_days=30) == (
        expected - Decimal("0.023") + Decimal("0.023") * 30 / ledger.DAYS_PER_MONTH
    ).quantize(ledger.AWS_USD_PLACES)
    assert ledger.aws_usd({}, retention_days=30) == 0


def test_counts_requests_by_what_they_are_billed_as() -> None:
    context = SimpleNamespace(memory_limit_in_mb=768)
    with ledger.metering(context, sqs_requests=2) as meter:
        ledger.count_request(operation("dynamodb", "GetItem"), {})
        ledger.count_request(operation("dynamodb", "Query"), {})
        ledger.count_request(operation("dynamodb", "UpdateItem"), {})
        ledger.count_request(operation("dynamodb", "TransactWriteItems"), {"TransactItems": [{}, {}, {}]})
        ledger.count_request(operation("s3", "PutObject"), {"Body": io.BytesIO(b"x" * 1000)})
        ledger.count_request(operation("s3", "PutObject"), {"Body": b"y" * 24})
        ledger.count_request(operation("s3", "GetObject"), {})
        ledger.count_request(operation("s3", "HeadObject"), {})
        ledger.count_request(operation("sqs", "SendMessage"), {})
        ledger.count_request(operation("states", "StartExecution"), {})  # billed by its transitions
        taken = meter.take()
    assert taken.pop("lambda_mb_ms") % 768 == 0
    assert taken == {
        "lambda_requests": 1,
        "sqs_requests": 3,
        "dynamodb_read_units": 2,
        "dynamodb_write_units": 7,
        "s3_write_requests": 2,
        "s3_bytes_stored": 1024,
        "s3_read_requests": 2,
    }
    ledger.count_request(operation("sqs", "SendMessage"), {})  # no meter: nothing happens, nothing breaks
    assert ledger.current() is None


def test_a_step_adopts_the_first_job_it_writes_and_gives_no_other_job_its_use() -> None:
    with ledger.metering(SimpleNamespace(memory_limit_in_mb=512)) as meter:
        mine, use = ledger.take_for("job_a")
        assert mine is meter and use["lambda_requests"] == 1
        assert ledger.take_for("job_b") == (None, {})
        meter.add({"sqs_requests": 1})
        assert ledger.take_for("job_a")[1]["sqs_requests"] == 1
    with ledger.metering(SimpleNamespace(), adopt=False):  # a batch's step: shared out, never adopted
        assert ledger.take_for("job_a") == (None, {})
        share = ledger.share_out(4, sfn_transitions=6)
        assert share["sfn_transitions"] == 2 and share["lambda_requests"] == 1  # a quarter of one, rounded up
        with ledger.charged("job_c", share):
            assert ledger.take_for("job_c")[1] == share
        # a run's scans before one batch's work are nobody's: the batch's jobs share only their own
        ledger.count_request(operation("dynamodb", "Query"), {})
        ledger.set_aside()
        ledger.count_request(operation("sqs", "SendMessage"), {})
        own = ledger.share_out(1)
        assert own.get("sqs_requests") == 1 and "dynamodb_read_units" not in own
    assert ledger.take_for("job_a") == (None, {})


def test_a_broken_context_meters_time_at_no_memory_rather_than_failing() -> None:
    assert ledger.memory_of(SimpleNamespace(memory_limit_in_mb="1024")) == 1024
    assert ledger.memory_of(SimpleNamespace(memory_limit_in_mb="lots")) == 0
    assert ledger.memory_of(object()) == 0


@pytest.mark.parametrize("cost", [None, "garbage"])
def test_webhooks_carry_the_cost_summary_and_survive_old_manifests(cost: Any) -> None:
    manifest = {"id": "job_1", "status": "succeeded", "outputs": [], "cost_usd": 0.011}
    full = {"provider_usd": 0.011, "aws_usd": 0.00003, "aws": {"usage": {"lambda_mb_ms": 5}, "prices_as_of": "x"}}
    body = json.loads(
        event_body({**manifest, "cost": full}, timestamp="t", api_url="https://x", presign=str, links_valid_s=1)
    )
    assert body["data"]["cost"] == {"provider_usd": 0.011, "aws_usd": 0.00003}
    old = json.loads(
        event_body({**manifest, "cost": cost}, timestamp="t", api_url="https://x", presign=str, links_valid_s=1)
    )
    assert old["data"]["cost"] is None
