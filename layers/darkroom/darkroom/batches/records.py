"""darkroom's record of each batch, in the batches table: what it holds and how far it has got.

`state` moves forward only, each step a conditional write: `assembling` (jobs being claimed, then the input file
uploaded), `uploaded` (the file is at the provider), `submitted` (the provider's batch exists: `provider_batch_id`),
then `ended` once every job in it has ended. A record is `pending` (in the sparse `by_pending` index) until its jobs
are polling and its poller runs, and holds a lease while a batcher works on it: a later batcher takes over a pending
record only once its lease has run out, which is longer than the batches function may run.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from darkroom import aws
from darkroom.settings import settings

BY_PENDING = "by_pending"
STATES = ("assembling", "uploaded", "submitted", "ended")


class BatchChanged(Exception):
    """The record is no longer as this write expected it: another batcher has it, or it moved on."""


@dataclass(frozen=True)
class BatchRecord:
    id: str
    tenant: str  # a batch holds one tenant's jobs
    queue: str  # {model}|{endpoint}
    endpoint: str  # /v1/images/generations or /v1/images/edits
    state: str
    created_at: float
    jobs: list[str] = field(default_factory=list)
    lease_id: str | None = None
    lease_until: float = 0.0
    input_file_id: str | None = None
    provider_batch_id: str | None = None
    provider_status: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    poll_until: float | None = None
    followed: bool = False  # its jobs moved to polling and its poller started
    cancel_requested: bool = False
    ended_at: float | None = None
    # How far the poller has read the ended batch's results: {"file": 0 (output) or 1 (errors), "offset": bytes}.
    collected: dict[str, int] = field(default_factory=dict)
    # Runs that took this record over from a batcher that stopped: past MAX_CARRIES it is given up.
    carries: int = 0

    def public(self) -> dict[str, Any]:
        """What a job in this batch shows of it."""
        return {
            "id": self.id,
            "provider_batch_id": self.provider_batch_id,
            "status": self.provider_status or ("submitting" if self.state in ("assembling", "uploaded") else None),
            "request_counts": self.request_counts or None,
            "jobs": len(self.jobs),
        }


_NUMBERS = ("created_at", "lease_until", "poll_until", "ended_at", "carries")
_STRINGS = (
    "tenant",
    "queue",
    "endpoint",
    "state",
    "lease_id",
    "input_file_id",
    "provider_batch_id",
    "provider_status",
)
_JSON = ("jobs", "request_counts", "collected")
_FLAGS = ("followed", "cancel_requested")


def _to_item(record: BatchRecord) -> dict[str, Any]:
    item: dict[str, Any] = {"id": {"S": record.id}}
    for name in _STRINGS:
        if getattr(record, name) is not None:
            item[name] = {"S": getattr(record, name)}
    for name in _NUMBERS:
        if getattr(record, name) is not None:
            item[name] = {"N": str(getattr(record, name))}
    for name in _JSON:
        item[name] = {"S": json.dumps(getattr(record, name))}
    for name in _FLAGS:
        item[name] = {"BOOL": getattr(record, name)}
    if not record.followed and record.state != "ended":
        item["pending"] = {"S": "pending"}
    return item


def _from_item(item: dict[str, Any]) -> BatchRecord:
    values: dict[str, Any] = {name: item[name]["S"] for name in _STRINGS if name in item}
    values.update({name: float(item[name]["N"]) for name in _NUMBERS if name in item})
    values["carries"] = int(values.get("carries", 0))
    values.update({name: json.loads(item[name]["S"]) for name in _JSON if name in item})
    values.update({name: item[name]["BOOL"] for name in _FLAGS if name in item})
    return BatchRecord(id=item["id"]["S"], **values)


class BatchStore:
    def __init__(self, table: str | None = None, client: Any = None) -> None:
        self.table = table or settings().batches_table
        self.db = client or aws.client("dynamodb")

    def get(self, batch_id: str) -> BatchRecord | None:
        item = self.db.get_item(TableName=self.table, Key={"id": {"S": batch_id}}, ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def create(self, record: BatchRecord) -> None:
        self.db.put_item(TableName=self.table, Item=_to_item(record), ConditionExpression="attribute_not_exists(id)")

    def pending_before(self, created_before: float, *, limit: int = 100) -> list[str]:
        """Ids of batches still pending that were created before `created_before`, oldest first. A pending record
        ends within MAX_CARRIES takeovers, so the oldest can never hide the newer for long."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_PENDING,
            "KeyConditionExpression": "pending = :p AND created_at < :t",
            "ExpressionAttributeValues": {":p": {"S": "pending"}, ":t": {"N": str(created_before)}},
        }
        ids: list[str] = []
        while len(ids) < limit:
            page = self.db.query(**query, Limit=limit - len(ids))
            ids += [item["id"]["S"] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return ids

    def take_over(self, record: BatchRecord, lease_s: float) -> BatchRecord:
        """The lease of a pending record whose batcher is gone (its lease ran out): BatchChanged if another took it
        or it has ended."""
        now = time.time()
        return self._update(
            record,
            "lease_until < :now AND #state <> :ended",
            {":now": {"N": str(now)}, ":ended": {"S": "ended"}},
            lease_id=uuid.uuid4().hex,
            lease_until=now + lease_s,
            carries=record.carries + 1,
        )

    def advance(self, record: BatchRecord, *, expected_state: str, **sets: Any) -> BatchRecord:
        """A change by the lease holder, from the state it read."""
        return self._update(
            record,
            "#state = :state AND lease_id = :lease",
            {":state": {"S": expected_state}, ":lease": {"S": record.lease_id or ""}},
            **sets,
        )

    def update(self, record: BatchRecord, **sets: Any) -> BatchRecord:
        """A change by the batch's poller (one execution per batch): only while it is submitted."""
        return self._update(record, "#state = :state", {":state": {"S": "submitted"}}, **sets)

    def _update(self, record: BatchRecord, condition: str, values: dict[str, Any], **sets: Any) -> BatchRecord:
        changed = replace(record, **sets)
        item = _to_item(changed)
        names = {"#state": "state"} if "#state" in condition else {}
        set_parts, remove_parts = [], []
        for i, name in enumerate([*sets, "pending"]):
            names[f"#f{i}"] = name
            if name in item:
                values[f":v{i}"] = item[name]
                set_parts.append(f"#f{i} = :v{i}")
            else:
                remove_parts.append(f"#f{i}")
        expression = "SET " + ", ".join(set_parts) if set_parts else ""
        if remove_parts:
            expression += " REMOVE " + ", ".join(remove_parts)
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"id": {"S": record.id}},
                UpdateExpression=expression.strip(),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise BatchChanged(f"batch {record.id} changed under this write") from None
            raise
        return changed
