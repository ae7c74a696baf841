"""What a job uses in AWS, and what that costs: darkroom's side of a job's bill, next to the provider's.

Each step that works on a job (the api's submission, the worker's call, a poll, an upload's arrival, a batch's
steps) runs under a `Meter`; the sweeper's rare recoveries are not metered. Every AWS request a client makes while
it runs is counted by a botocore hook (darkroom.aws), and the step's wall time, at its function's memory, becomes
Lambda MB-ms. The counts reach the job's record with the step's own writes to it (darkroom.jobs.store adds them with
`ADD`, so a retried write that already landed counts them once): metering costs no request of its own. What a step
does after its last write to the job is counted with the job's next write (the manifest's confirmation, the last,
never), and webhook deliveries not at all: those are per endpoint, not per job.

The cost is priced from the counts with `PRICES`, a dated table (us-east-1, on-demand, arm64, no free tier).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# The counters a job's record keeps, each stored as `aws_{name}`.
COUNTERS = (
    "lambda_mb_ms",  # memory (MB) x wall time (ms) of every step, summed
    "lambda_requests",
    "apigw_requests",
    "sqs_requests",
    "dynamodb_read_units",
    "dynamodb_write_units",
    "s3_write_requests",  # PUT, COPY, POST, LIST
    "s3_read_requests",  # GET, HEAD and the rest
    "sfn_transitions",
    "s3_bytes_stored",
)
ATTRIBUTE_PREFIX = "aws_"


@dataclass(frozen=True)
class Prices:
    as_of: str
    lambda_gb_s: Decimal
    lambda_request: Decimal
    apigw_request: Decimal  # HTTP API
    sqs_request: Decimal
    dynamodb_read_unit: Decimal  # on-demand
    dynamodb_write_unit: Decimal
    s3_write_request: Decimal
    s3_read_request: Decimal
    sfn_transition: Decimal  # standard workflows
    s3_gb_month: Decimal


MILLION = Decimal(1_000_000)
PRICES = Prices(
    as_of="2026-11-01",
    lambda_gb_s=Decimal("0.0000133334"),
    lambda_request=Decimal("0.20") / MILLION,
    apigw_request=Decimal("1.00") / MILLION,
    sqs_request=Decimal("0.40") / MILLION,
    dynamodb_read_unit=Decimal("0.125") / MILLION,
    dynamodb_write_unit=Decimal("0.625") / MILLION,
    s3_write_request=Decimal("0.005") / 1000,
    s3_read_request=Decimal("0.0004") / 1000,
    sfn_transition=Decimal("0.025") / 1000,
    s3_gb_month=Decimal("0.023"),
)
AWS_USD_PLACES = Decimal("0.000000001")
GB = 1024**3
DAYS_PER_MONTH = Decimal("30.4375")

_S3_WRITES = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload", "UploadPart", "ListObjectsV2"})
_DYNAMODB_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})


class Meter:
    """One step's AWS use for one job (`job_id`; None until the step's first write to a job adopts one)."""

    def __init__(self, memory_mb: int, job_id: str | None = None, *, adopt: bool = True) -> None:
        self.memory_mb = memory_mb
        self.job_id = job_id
        # A step working for many jobs at once (a batch) adopts none: its use is shared out with `charged`.
        self.adopt = adopt
        self._since = time.monotonic()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()  # a preview's thread counts into its job's meter too

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def take(self) -> dict[str, int]:
        """What was used since the last take, the time so far included; it is gone from the meter once taken, so
        `add` it back if the write that was to carry it failed."""
        with self._lock:
            now = time.monotonic()
            self._counts["lambda_mb_ms"] += math.ceil((now - self._since) * 1000) * self.memory_mb
            self._since = now
            taken, self._counts = self._counts, dict.fromkeys(COUNTERS, 0)
        return {name: n for name, n in taken.items() if n}

    def add(self, taken: dict[str, int]) -> None:
        """Counts used outside any client of ours, or taken for a write that then failed."""
        for name, n in taken.items():
            self.count(name, n)


_current: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("darkroom_meter", default=None)


def memory_of(context: Any) -> int:
    """The function's memory (MB), from its Lambda context."""
    value = getattr(context, "memory_limit_in_mb", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@contextmanager
def metering(context: Any, *, adopt: bool = True, **counts: int) -> Iterator[Meter]:
    """Meter what runs inside, for the first job it writes (`adopt`) or for many (see `charged`). `counts`: requests
    made on the job's behalf that no client of ours sees (the API Gateway request that carried it, the SQS receive
    and delete of its message, its state machine's transitions)."""
    meter = Meter(memory_of(context), adopt=adopt)
    meter.add({"lambda_requests": 1, **counts})
    with _metered(meter):
        yield meter


@contextmanager
def charged(job_id: str, share: dict[str, int]) -> Iterator[None]:
    """Writes to `job_id` inside carry `share`: its part of a step done for several jobs at once."""
    meter = Meter(0, job_id)
    meter.add(share)
    with _metered(meter):
        yield


@contextmanager
def _metered(meter: Meter) -> Iterator[Meter]:
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def set_aside() -> None:
    """What the current meter counted so far belongs to no job: a shared run's scans, before the work of one batch
    (whose jobs then share only their own). The invocation itself is kept, for the first batch to share."""
    meter = _current.get()
    if meter is not None:
        meter.add({"lambda_requests": meter.take().get("lambda_requests", 0)})


def share_out(ways: int, **earlier: int) -> dict[str, int]:
    """The current (shared) meter's use so far, and `earlier` use it stands for, split `ways` ways."""
    meter = _current.get()
    if meter is None or ways <= 0:
        return {}
    return split(plus(meter.take(), earlier), ways)


def current() -> Meter | None:
    return _current.get()


def take_for(job_id: str) -> tuple[Meter | None, dict[str, int]]:
    """The current meter's counts, when they belong to `job_id` (a step adopts the first job it writes)."""
    meter = _current.get()
    if meter is None:
        return None, {}
    if meter.job_id is None and meter.adopt:
        meter.job_id = job_id
    if meter.job_id != job_id:
        return None, {}
    return meter, meter.take()


def count_request(model: Any, params: Any, **_: Any) -> None:
    """botocore's `before-parameter-build` hook: one request made for the current meter's job."""
    meter = _current.get()
    if meter is None:
        return
    service, operation = model.service_model.service_name, model.name
    if service == "dynamodb":
        items = params.get("TransactItems") if isinstance(params, dict) else None
        if items is not None:  # a transaction costs two units per item
            units = 2 * len(items)
            meter.count("dynamodb_read_units" if operation == "TransactGetItems" else "dynamodb_write_units", units)
        else:
            meter.count("dynamodb_read_units" if operation in _DYNAMODB_READS else "dynamodb_write_units")
    elif service == "s3":
        if operation in _S3_WRITES:
            meter.count("s3_write_requests")
            meter.count("s3_bytes_stored", _size(params.get("Body") if isinstance(params, dict) else None))
        else:
            meter.count("s3_read_requests")
    elif service == "sqs":
        meter.count("sqs_requests")


def _size(body: Any) -> int:
    """A PutObject body's length: bytes, or the seekable file botocore has already wrapped them in."""
    if isinstance(body, bytes | bytearray):
        return len(body)
    getbuffer = getattr(body, "getbuffer", None)
    return getbuffer().nbytes if callable(getbuffer) else 0


def counts_of(item: dict[str, Any]) -> dict[str, int]:
    """A job record's counters (darkroom.jobs.store)."""
    return {name: int(item[ATTRIBUTE_PREFIX + name]["N"]) for name in COUNTERS if ATTRIBUTE_PREFIX + name in item}


def aws_usd(counts: dict[str, int], *, retention_days: int, prices: Prices = PRICES) -> Decimal:
    """What the counts cost, with stored bytes kept for `retention_days` (the outputs' lifecycle)."""
    n = {name: Decimal(counts.get(name, 0)) for name in COUNTERS}
    total = (
        n["lambda_mb_ms"] / 1024 / 1000 * prices.lambda_gb_s
        + n["lambda_requests"] * prices.lambda_request
        + n["apigw_requests"] * prices.apigw_request
        + n["sqs_requests"] * prices.sqs_request
        + n["dynamodb_read_units"] * prices.dynamodb_read_unit
        + n["dynamodb_write_units"] * prices.dynamodb_write_unit
        + n["s3_write_requests"] * prices.s3_write_request
        + n["s3_read_requests"] * prices.s3_read_request
        + n["sfn_transitions"] * prices.sfn_transition
        + n["s3_bytes_stored"] / GB * prices.s3_gb_month * Decimal(retention_days) / DAYS_PER_MONTH
    )
    return total.quantize(AWS_USD_PLACES, rounding=ROUND_HALF_UP)


def plus(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {name: counts.get(name, 0) + more.get(name, 0) for name in {*counts, *more}}


def split(counts: dict[str, int], ways: int) -> dict[str, int]:
    """An equal share of counts used for several jobs at once (a batch), rounded up: no share is free."""
    return {name: -(-n // ways) for name, n in counts.items()} if ways > 0 else {}


def brief(cost: Any) -> dict[str, Any] | None:
    """A job's `cost` without what the AWS figure is made of: for lists and webhooks (`GET /v1/jobs/{id}` has it)."""
    if not isinstance(cost, dict):
        return None  # a manifest written before the ledger
    return {"provider_usd": cost.get("provider_usd"), "aws_usd": cost.get("aws_usd")}
