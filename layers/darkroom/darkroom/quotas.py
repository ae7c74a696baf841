"""Tenant quotas, kept in the tenants table: jobs in flight, submissions per minute, and a monthly budget in USD.

Each tenant is one partition (`tenant`), its items told apart by `record`:
- `limits`: the tenant's own quotas, when an operator set them (`darkroom tenants set`); otherwise the deployment's
  defaults (TenantMaxJobsInFlight, TenantSubmitsPerMinute, TenantMonthlyBudgetUsd) apply;
- `submits`: the per-minute limit's timeline (a token bucket a minute's worth deep, as darkroom.ratelimit keeps);
- `counters`: `in_flight`, the tenant's accepted jobs that have not ended;
- `month#YYYY-MM`: `committed_usd` (worst cases reserved for jobs under way plus the real cost of ended ones) and
  `spent_usd` (real costs only);
- `usage#YYYY-MM-DD#model`: what ended that day (darkroom.usage);
- `wait#K` (K below WaitsPerTenant): a `Prefer: wait` under way, held `until` a time, so one tenant's waiting
  requests never take more than their share of the api function's reserved concurrency.

A job is admitted in the same transaction that creates it: `in_flight` goes up unless it is at the limit, and the
job's worst-case cost is added to `committed_usd` unless that would pass the budget. DynamoDB runs the conditions
and the writes as one, so concurrent submits can never together overspend or overfill. When the job ends, one more
transaction marks it settled (once: the mark is the condition), takes it out of `in_flight`, replaces its reservation
with its real cost and adds it to the day's usage (darkroom.usage.settle).
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from darkroom import aws, catalog, routing
from darkroom.errors import BudgetExceeded, QuotaExceeded
from darkroom.observability import logger
from darkroom.ratelimit import Timeline
from darkroom.settings import settings

LIMITS_TTL_S = 60.0
USD = Decimal("0.000001")
# The most image input tokens darkroom expects one input image to cost. OpenAI publishes no bound: a 1024x1024 input
# at high fidelity costs a few thousand; this keeps a reservation on the safe side.
INPUT_IMAGE_TOKENS = 10_000
# Output tokens of a 1024x1024 image by quality (gpt-image-2, from the published per-image prices at $30 / 1M); other
# sizes scale by their pixels. The qualities above high are taken to cost twice and four times as much.
OUTPUT_TOKENS_1024 = {"low": 200, "medium": 1_767, "high": 7_034, "xhigh": 14_068, "max": 28_136}
# What OpenAI bills for each preview of a streamed image (partial_images), in output image tokens.
PREVIEW_TOKENS = 100
AUTO_SIZE_PIXELS = 1536 * 1024  # `auto` picks a standard size; the largest of them


@dataclass(frozen=True)
class TenantLimits:
    """0 for no limit; None for no budget."""

    max_in_flight: int = 0
    submits_per_minute: int = 0
    monthly_budget_usd: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        budget = self.monthly_budget_usd
        return {
            "max_in_flight": self.max_in_flight or None,
            "submits_per_minute": self.submits_per_minute or None,
            "monthly_budget_usd": float(budget) if budget is not None else None,
        }


def tenants_table() -> str:
    return settings().tenants_table


def _key(tenant: str, record: str) -> dict[str, Any]:
    return {"tenant": {"S": tenant}, "record": {"S": record}}


_limits_cache: dict[str, tuple[float, TenantLimits]] = {}
_limits_lock = threading.Lock()


def limits_for(tenant: str) -> TenantLimits:
    """The tenant's quotas: its own record's, each falling back to the deployment's default. Read at most once a
    minute per function instance."""
    now = time.monotonic()
    with _limits_lock:
        cached = _limits_cache.get(tenant)
    if cached and cached[0] > now:
        return cached[1]
    item = aws.client("dynamodb").get_item(TableName=tenants_table(), Key=_key(tenant, "limits")).get("Item") or {}
    s = settings()
    budget = item.get("monthly_budget_usd", {}).get("N")
    limits = TenantLimits(
        max_in_flight=int(item["max_in_flight"]["N"]) if "max_in_flight" in item else s.tenant_max_in_flight,
        submits_per_minute=(
            int(item["submits_per_minute"]["N"]) if "submits_per_minute" in item else s.tenant_submits_per_minute
        ),
        monthly_budget_usd=Decimal(budget) if budget is not None else s.tenant_monthly_budget_usd,
    )
    with _limits_lock:
        _limits_cache[tenant] = (now + LIMITS_TTL_S, limits)
    return limits


def set_limits(tenant: str, **values: int | Decimal | None) -> None:
    """An operator's change to one tenant's quotas (None removes the tenant's own value: the default applies)."""
    sets, removes, names, attributes = [], [], {}, {}
    for name, value in values.items():
        names[f"#{name}"] = name
        if value is None:
            removes.append(f"#{name}")
        else:
            sets.append(f"#{name} = :{name}")
            attributes[f":{name}"] = {"N": str(value)}
    expression = " ".join(
        part
        for part in ("SET " + ", ".join(sets) if sets else "", "REMOVE " + ", ".join(removes) if removes else "")
        if part
    )
    if not expression:
        return
    request: dict[str, Any] = {
        "TableName": tenants_table(),
        "Key": _key(tenant, "limits"),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
    }
    if attributes:
        request["ExpressionAttributeValues"] = attributes
    aws.client("dynamodb").update_item(**request)
    with _limits_lock:
        _limits_cache.pop(tenant, None)


@contextlib.contextmanager
def wait_slot(tenant: str, seconds: float, holder: str) -> Iterator[bool]:
    """One of the tenant's WaitsPerTenant slots for a request that waits `seconds`: True while held, False when all
    are taken (or the table could not be written), and then the request must not wait. A slot is held until a time,
    so one whose holder died frees itself; it is given back at once otherwise."""
    slot = _take_wait_slot(tenant, seconds, holder)
    try:
        yield slot is not None
    finally:
        if slot is not None:
            _give_back_wait_slot(tenant, slot, holder)


WAIT_SLOT_MARGIN_S = 5


def _take_wait_slot(tenant: str, seconds: float, holder: str) -> str | None:
    slots = settings().waits_per_tenant
    now = int(time.time())
    until = now + math.ceil(seconds) + WAIT_SLOT_MARGIN_S
    for index in random.sample(range(slots), slots):  # random order: concurrent waiters rarely try the same one
        record = f"wait#{index}"
        try:
            free = "attribute_not_exists(#until) OR #until < :now"
            _write_wait_slot(tenant, record, free, until, holder, {":now": {"N": str(now)}})
            return record
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                logger.warning("a wait slot could not be taken; answering without waiting", exc_info=True)
                return None
    return None


def _give_back_wait_slot(tenant: str, record: str, holder: str) -> None:
    try:
        _write_wait_slot(tenant, record, "#holder = :holder", 0, holder)
    except Exception:  # it frees itself at its `until`; another holder may already have taken it after that
        logger.info("a wait slot was not given back", exc_info=True, extra={"tenant": tenant, "slot": record})


def _write_wait_slot(
    tenant: str, record: str, condition: str, until: int, holder: str, values: dict[str, Any] | None = None
) -> None:
    aws.client("dynamodb").update_item(
        TableName=tenants_table(),
        Key=_key(tenant, record),
        UpdateExpression="SET #until = :until, #holder = :holder",
        ConditionExpression=condition,
        ExpressionAttributeNames={"#until": "until", "#holder": "holder"},
        ExpressionAttributeValues={":until": {"N": str(until)}, ":holder": {"S": holder}, **(values or {})},
    )


def month_of(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m")


def admit_submission(tenant: str, limits: TenantLimits) -> None:
    """Count one submission against the tenant's per-minute limit: a steady `submits_per_minute`, with up to a
    minute's worth at once. QuotaExceeded (429, with retry-after) when the tenant is over it."""
    per_minute = limits.submits_per_minute
    if not per_minute:
        return
    interval = 60.0 / per_minute
    timeline = Timeline(tenants_table(), _key(tenant, "submits"))
    at, taken = timeline.take(interval, tolerance_s=60.0, ahead_s=0.0)
    if not taken:
        raise QuotaExceeded(
            f"This key's tenant may submit {per_minute} jobs a minute; try again in a moment.",
            code="rate_limited",
            retry_after_s=max(1, math.ceil(at - time.time())),
        )


def worst_case_usd(
    model: str, request: dict[str, Any], route: str, input_images: int = 0, *, batch: bool = False
) -> Decimal:
    """The most a job can cost: on a route priced per image, its price times n; otherwise the output tokens of its
    size and quality (and its previews') times n, its prompt's bytes as text tokens, and INPUT_IMAGE_TOKENS per input
    image; half of that on the batch tier."""
    n = int(request.get("n") or 1)
    per_image = routing.ROUTES[route].price_per_image
    if per_image is not None:
        return (per_image * n).quantize(USD, rounding=ROUND_CEILING)
    spec = catalog.MODELS.get(model)
    prices = spec.prices if spec else catalog.GPT_IMAGE_PRICES
    quality = str(request.get("quality") or "auto")
    tokens_1024 = OUTPUT_TOKENS_1024.get(quality, OUTPUT_TOKENS_1024["high"])  # auto may pick high
    dims = catalog.parse_size(str(request.get("size") or "auto"))
    # `auto` picks a standard size for a generation, but an edit keeps its input's size, up to the largest allowed.
    pixels = dims[0] * dims[1] if dims else (catalog.MAX_PIXELS if input_images else AUTO_SIZE_PIXELS)
    previews = int(request.get("partial_images") or 0) * PREVIEW_TOKENS
    output_tokens = (math.ceil(tokens_1024 * max(1.0, pixels / (1024 * 1024))) + previews) * n
    text_tokens = len(str(request.get("prompt", "")).encode())
    total = (
        output_tokens * prices.image_output
        + text_tokens * prices.text_input
        + input_images * INPUT_IMAGE_TOKENS * prices.image_input
    ) / catalog.PER_MILLION
    if batch:
        total /= 2
    return total.quantize(USD, rounding=ROUND_CEILING)


@dataclass(frozen=True)
class Reservation:
    """What a job holds of its tenant's quotas, kept on the job until it is settled."""

    month: str
    usd: Decimal

    def as_dict(self) -> dict[str, str]:
        return {"month": self.month, "usd": str(self.usd)}

    @classmethod
    def from_dict(cls, value: Any) -> Reservation | None:
        if not isinstance(value, dict) or "month" not in value:
            return None
        return cls(str(value["month"]), Decimal(str(value.get("usd", "0"))))


def record_update(
    tenant: str,
    record: str,
    expression: str,
    values: dict[str, Any],
    condition: str | None = None,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A transaction item that changes one of the tenant's records."""
    update: dict[str, Any] = {
        "TableName": tenants_table(),
        "Key": _key(tenant, record),
        "UpdateExpression": expression,
        "ExpressionAttributeValues": values,
    }
    if condition:
        update["ConditionExpression"] = condition
    if names:
        update["ExpressionAttributeNames"] = names
    return {"Update": update}


def reserve_items(tenant: str, limits: TenantLimits, reservation: Reservation) -> list[dict[str, Any]]:
    """The transaction items that admit one job: one more in flight (unless at the limit), and its worst case
    committed against the month's budget (unless it would pass it). Counted even without limits, so a limit set
    later starts from the truth."""
    in_flight: dict[str, Any] = {":one": {"N": "1"}}
    if limits.max_in_flight:
        in_flight[":max"] = {"N": str(limits.max_in_flight)}
    budget: dict[str, Any] = {":usd": {"N": str(reservation.usd)}}
    if limits.monthly_budget_usd is not None:
        budget[":room"] = {"N": str(limits.monthly_budget_usd - reservation.usd)}
    return [
        record_update(
            tenant,
            "counters",
            "ADD in_flight :one",
            in_flight,
            "attribute_not_exists(in_flight) OR in_flight < :max" if limits.max_in_flight else None,
        ),
        # DynamoDB conditions cannot add: compare what is committed with the budget less this job.
        record_update(
            tenant,
            f"month#{reservation.month}",
            "ADD committed_usd :usd",
            budget,
            "attribute_not_exists(committed_usd) OR committed_usd <= :room" if ":room" in budget else None,
        ),
    ]


def release_items(tenant: str, reservation: Reservation) -> list[dict[str, Any]]:
    """The transaction items that give back a job's admission unused (a submission withdrawn before it ran)."""
    return [
        record_update(tenant, "counters", "ADD in_flight :minus", {":minus": {"N": "-1"}}),
        record_update(
            tenant, f"month#{reservation.month}", "ADD committed_usd :usd", {":usd": {"N": str(-reservation.usd)}}
        ),
    ]


def refusal(tenant: str, limits: TenantLimits, reservation: Reservation, failed: list[bool]) -> Exception:
    """The client's answer when the admission items (`failed` for [in flight, budget]) refused the job."""
    if failed[0]:
        return QuotaExceeded(
            f"This key's tenant has {limits.max_in_flight} jobs in flight, its limit; submit again as they end.",
            code="too_many_jobs_in_flight",
            retry_after_s=5,
        )
    committed = committed_usd(tenant, reservation.month)
    return BudgetExceeded(
        f"This job could cost up to ${reservation.usd}; ${committed} of the tenant's ${limits.monthly_budget_usd} "
        f"budget for {reservation.month} is already committed. Nothing was queued."
    )


def _month(tenant: str, month: str) -> dict[str, Any]:
    key = _key(tenant, f"month#{month}")
    item = aws.client("dynamodb").get_item(TableName=tenants_table(), Key=key, ConsistentRead=True).get("Item")
    return dict(item or {})


def _usd(item: dict[str, Any], name: str) -> Decimal:
    return Decimal(item.get(name, {}).get("N", "0"))


def committed_usd(tenant: str, month: str) -> Decimal:
    return _usd(_month(tenant, month), "committed_usd")


def budget_state(tenant: str, month: str) -> dict[str, Any]:
    """The month's budget as the usage API shows it."""
    item = _month(tenant, month)
    limits = limits_for(tenant)
    return {
        "month": month,
        "limit_usd": float(limits.monthly_budget_usd) if limits.monthly_budget_usd is not None else None,
        "committed_usd": float(_usd(item, "committed_usd")),
        "spent_usd": float(_usd(item, "spent_usd")),
    }
