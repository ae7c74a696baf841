"""What each tenant used, kept as its jobs end: per day and model, the jobs (by how they ended), images, tokens and
cost. `GET /v1/usage` reads these records; it never scans jobs.

`settle` runs for every ended job before its manifest is written (darkroom.jobs.manifests), and a job keeps its
place in the sweep index until its manifest is confirmed, so every ended job is settled, even when the worker that
ended it died right after. It is one transaction, conditional on the job not being settled yet: however often it
runs, a job is counted once, its in-flight slot given back once, and its reservation replaced by its real cost once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from darkroom import aws, routing
from darkroom.ids import now_iso
from darkroom.jobs.store import Job, TransactionConflict, transact
from darkroom.quotas import Reservation, budget_state, month_of, record_update, tenants_table
from darkroom.settings import settings

MAX_DAYS = 366
COUNTED = ("jobs", "succeeded", "failed", "canceled", "images", "input_tokens", "output_tokens")
PRICED = ("cost_usd", "aws_cost_usd")  # the provider's cost (kept under its first name) and darkroom's in AWS
ZERO = Decimal(0)


def _tokens(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# How a job ends when a call may have been billed with no answer to price it from (darkroom.jobs.run).
MAYBE_BILLED = ("provider_timeout", "provider_disconnected", "provider_unavailable", "interrupted", "internal_error")


def _billed_without_a_price(job: Job) -> Decimal:
    """What an ended job without a priced answer is known to have cost: an asynchronous provider bills each
    submission it took (a job canceled or failed while it was polling), at its listed price per image."""
    per_image = routing.ROUTES[job.route].price_per_image if job.route in routing.ROUTES else None
    if job.prediction_id and per_image is not None:
        return per_image * int(job.request.get("n") or 1)
    return Decimal(0)


# How a batch-tier job sent in a batch ends when OpenAI certainly did not bill its line: the batch never ran it, or
# refused it.
BATCH_UNBILLED = ("batch_expired", "batch_cancelled", "batch_failed", "moderation_blocked", "provider_rejected")


def _maybe_billed(job: Job) -> bool:
    if job.cost_usd is not None:
        return False
    code = (job.error or {}).get("code")
    if job.tier == "batch":
        # Sent in a batch (or maybe: its batch was lost track of) and ended with no priced line, canceled included:
        # OpenAI cancels whole batches only, so its line may have run.
        return code == "batch_unknown" or (bool(job.prediction_id) and code not in BATCH_UNBILLED)
    return job.provider_calls > 0 and code in MAYBE_BILLED


def settle(job: Job) -> bool:
    """Count an ended job in its tenant's usage and quotas, once. True when this call did it."""
    if job.settled_at is not None or not job.terminal:
        return False
    ended = job.completed_at or now_iso()
    cost = job.cost_usd if job.cost_usd is not None else _billed_without_a_price(job)
    reservation = Reservation.from_dict(job.quota)
    settled_at = now_iso()
    values = {
        ":one": {"N": "1"},
        ":images": {"N": str(len(job.outputs))},
        ":input": {"N": str(_tokens(job.usage, "input_tokens"))},
        ":output": {"N": str(_tokens(job.usage, "output_tokens"))},
        ":cost": {"N": str(cost)},
        # What the job used in AWS up to now: its manifest's write and webhook deliveries come after.
        # Fixed-point: a nano-dollar's str() is "1E-9", and a number's text is best kept plain for DynamoDB.
        ":aws": {"N": format(job.aws_usd(), "f")},
        ":model": {"S": job.model},
        ":day": {"S": ended[:10]},
    }
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": settings().jobs_table,
                "Key": {"id": {"S": job.id}},
                "UpdateExpression": "SET settled_at = :now",
                "ConditionExpression": "attribute_not_exists(settled_at) AND #status = :status",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":now": {"S": settled_at}, ":status": {"S": job.status}},
            }
        },
        record_update(
            job.tenant,
            f"usage#{ended[:10]}#{job.model}",
            f"SET model = :model, #day = :day ADD jobs :one, {job.status} :one, images :images, "
            "input_tokens :input, output_tokens :output, cost_usd :cost, aws_cost_usd :aws",
            values,
            names={"#day": "day"},
        ),
    ]
    if reservation is not None:
        items.append(record_update(job.tenant, "counters", "ADD in_flight :minus", {":minus": {"N": "-1"}}))
        # A job that may have been billed an unknown amount keeps its whole reservation against the budget.
        change = Decimal(0) if _maybe_billed(job) else cost - reservation.usd
        month = reservation.month
    else:  # accepted before quotas existed: nothing was reserved
        change, month = cost, month_of()
    items.append(
        record_update(
            job.tenant,
            f"month#{month}",
            "ADD committed_usd :change, spent_usd :cost",
            {":change": {"N": str(change)}, ":cost": {"N": str(cost)}},
        )
    )
    try:
        # The token makes a retried call (an answer lost on the way) the same call, not a second settlement.
        transact(aws.client("dynamodb"), items, token=f"settle-{job.id}")
    except TransactionConflict as exc:
        if exc.failed[0]:
            return False  # settled already (or the job changed: whoever changed it settles it)
        raise
    job.settled_at = settled_at
    return True


def report(tenant: str, start: date, end: date, group_by: str) -> dict[str, Any]:
    """The tenant's usage from `start` to `end` (whole UTC days, both included), by day or by model."""
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {name: 0 for name in COUNTED} | dict.fromkeys(PRICED, ZERO))
    total: dict[str, Any] = {name: 0 for name in COUNTED} | dict.fromkeys(PRICED, ZERO)
    pages = (
        aws.client("dynamodb")
        .get_paginator("query")
        .paginate(
            TableName=tenants_table(),
            KeyConditionExpression="tenant = :tenant AND #record BETWEEN :first AND :last",
            ExpressionAttributeNames={"#record": "record"},
            ExpressionAttributeValues={
                ":tenant": {"S": tenant},
                ":first": {"S": f"usage#{start.isoformat()}"},
                ":last": {"S": f"usage#{end.isoformat()}#\uffff"},
            },
        )
    )
    for page in pages:
        for item in page.get("Items", []):
            _, day, model = item["record"]["S"].split("#", 2)
            row = rows[day if group_by == "day" else model]
            for target in (row, total):
                for name in COUNTED:
                    target[name] += int(item.get(name, {}).get("N", "0"))
                for name in PRICED:
                    target[name] += Decimal(item.get(name, {}).get("N", "0"))
    key = "day" if group_by == "day" else "model"
    data = [{key: name, **_shown(row)} for name, row in sorted(rows.items())]
    return {
        "object": "usage",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "data": data,
        "total": _shown(total),
        "budget": budget_state(tenant, month_of()),
    }


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    provider, aws_usd = float(row["cost_usd"]), float(row["aws_cost_usd"])
    return {
        **{name: row[name] for name in COUNTED},
        "cost_usd": provider,
        "cost": {"provider_usd": provider, "aws_usd": aws_usd},
    }
