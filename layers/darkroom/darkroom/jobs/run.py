"""What the worker does with one message from the jobs queue.

The rules that keep every job to one terminal state and at most one billed provider call:
- a message only ever moves a job forward through a conditional write (darkroom.jobs.store);
- a retry is a new, delayed message sent after the job is back to `queued`; the current message is then done;
- every message carries the job's provider-call count when it was sent, and a claim only succeeds at the job's
  current count: duplicates and superseded messages can never make a second call (see `message_verdict`);
- a job found `running` under a live lease belongs to someone else: the message fails and comes back later;
- a write that finds the job changed under it never drops its message unless the job has ended: the message comes
  back later and is judged against the job as it then is;
- a provider call that may have reached the provider and lost its answer (a read timeout, a connection cut after
  sending, a slow 5xx) is never repeated unless the operator opted in: the job fails with the reason;
- once the provider has answered, the images are stored and the job ends whatever else goes wrong;
- a job found `running` under an expired lease is recovered: finished from S3 if the provider had answered and every
  output was stored, failed as `interrupted` otherwise (its call may have been billed, so it is never repeated);
- a job moves to its next route (darkroom.routing) only when the call before certainly did not generate (it never
  reached the provider, a quick unbilled 5xx, darkroom's key or account refused) or the route's breaker is open
  (darkroom.breakers): the move is the same conditional requeue a retry is;
- a terminal job only gets its manifest rewritten if it is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from darkroom import aws, breakers, images, moderation, pricing, queue, ratelimit, routing, storage
from darkroom.errors import (
    ModerationUnavailable,
    ProviderAmbiguous,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.jobs import cache, manifests, polling
from darkroom.jobs.previews import PreviewRecorder
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.observability import logger, metrics
from darkroom.providers.images_response import GenerationResult
from darkroom.settings import settings

# Time kept back from the invocation for storing outputs after the provider answers.
STORE_RESERVE_S = 30.0
# The shortest provider call worth starting when an invocation cannot give a full ProviderTimeoutSeconds (a later
# record of a batch): below it, the message waits for a fresh invocation instead.
MIN_CALL_S = 60.0
LEASE_MARGIN_S = 30.0
# How late a retry's own message may be (queue backlog) before an older message of the job may start it instead.
RETRY_OVERDUE_S = 900
# An asynchronous provider's submission only queues the job: it answers in seconds, not minutes.
SUBMIT_TIMEOUT_S = 30.0
# A moderation check classifies a prompt and an image in about a second.
MODERATION_TIMEOUT_S = 30.0
# A turn this close is waited for in place rather than through the queue.
SLEEP_FOR_TURN_S = 2.0
# How long an asynchronous provider's links to an edit's inputs stay valid: it fetches them when it starts the job.
INPUT_URL_TTL_S = 3600
# How long a job with no other route waits for its route's breaker to close, from when it first found it open.
ROUTE_DOWN_MAX_WAIT_S = 1800
# Rejections that say the route itself is misconfigured (its key, its account), not the request.
ROUTE_REJECTIONS = ("provider_auth", "provider_quota")


class JobBusy(Exception):
    """Another worker holds this job's lease, or this invocation cannot give it a full provider call: leave the
    message on the queue for later."""


RemainingMs = Callable[[], int]


def handle_queue_message(body: str, source_arn: str, remaining_ms: RemainingMs) -> None:
    """One SQS record from the jobs queue or, when `source_arn` is the dead-letter queue's, from that.

    A message darkroom cannot read fails on the jobs queue, so it reaches the dead-letter queue where operators
    look; there it is logged and dropped rather than failing forever.
    """
    dead_letter = bool(source_arn) and source_arn == settings().jobs_dlq_arn
    try:
        message = json.loads(body)
        if not isinstance(message, dict) or not isinstance(message.get("job_id"), str):
            raise ValueError("not a job message")
    except ValueError:
        if dead_letter:
            logger.error("unreadable dead letter dropped", extra={"body": body[:1000]})
            return
        raise
    try:
        if dead_letter:
            handle_dead_letter(message)
        else:
            handle_job_message(message, remaining_ms)
    except JobBusy as exc:
        logger.info("message left for later", extra={"job_id": message["job_id"], "reason": str(exc)})
        raise
    except Exception:
        # A failed record is logged at debug level only (darkroom.sqs_batches): an unexpected one must reach operators.
        logger.exception("job message failed", extra={"job_id": message["job_id"], "dead_letter": dead_letter})
        raise


PROCESS, DROP, LATER = "process", "drop", "later"


def message_verdict(job: Job, attempt: Any, now: datetime | None = None) -> str:
    """What to do with a message for a job that has not ended: process it, drop it, or leave it for later.

    Any message may recover a running job whose lease ran out (recovery never calls the provider). Under a live
    lease, a message older than the one that claimed the job (sent one call earlier) is a duplicate: drop it. A
    queued job waits for the message of its current call count: an older message is left for later while that one
    may still come, and starts the job once the retry is long overdue (its message was never sent: the worker died
    between requeueing and sending, or SQS refused), so no job waits forever. Claims are conditional on the count, so
    however many messages get through, each count makes at most one provider call.
    """
    if not isinstance(attempt, int):
        return PROCESS  # a message without a count: judge it by the job alone
    if job.status == "running":
        return DROP if attempt < job.provider_calls - 1 and not job.lease_expired() else PROCESS
    if attempt >= job.provider_calls or _retry_overdue(job, now or datetime.now(UTC)):
        return PROCESS
    return LATER


def _retry_overdue(job: Job, now: datetime) -> bool:
    due = job.next_attempt_due
    return due is None or now > due + timedelta(seconds=RETRY_OVERDUE_S)


def _open_job(store: JobStore, body: dict[str, Any]) -> Job | None:
    """The job a message names, or None when nothing is left to do: no such job, it has ended (then its manifest is
    made sure of), or an asynchronous provider has it (then its poller is: the worker that submitted it may have died
    before starting it)."""
    job = store.get(str(body["job_id"]))
    if job is None:
        logger.warning("message for an unknown job, dropped", extra={"job_id": body["job_id"]})
    elif job.terminal:
        manifests.ensure(store, job)
        return None
    elif job.status == "polling":
        polling.ensure_poller(store, job)
        return None
    return job


def handle_job_message(body: dict[str, Any], remaining_ms: RemainingMs) -> None:
    store = JobStore()
    job = _open_job(store, body)
    if job is None:
        return
    verdict = message_verdict(job, body.get("attempt"))
    if verdict == DROP:
        logger.info("duplicate message dropped", extra={"job_id": job.id, "attempt": body.get("attempt")})
        return
    if verdict == LATER:
        raise JobBusy(f"job {job.id} waits for its retry's own message")
    try:
        if job.status == "queued":
            if job.cache and job.provider_calls == 0 and cache.serve(store, job):
                return  # served from the cache: no provider call
            ready = _route_ready(store, job, body)
            if ready is not None:
                _run(store, *ready, remaining_ms)
        elif not job.lease_expired():
            raise JobBusy(f"job {job.id} is running elsewhere until its lease ends")
        else:
            recover_abandoned(store, job)
    except LeaseLost:
        _settle_after_conflict(store, job.id)


def handle_dead_letter(body: dict[str, Any]) -> None:
    """A message the jobs queue gave up on: its job must still end, and say why."""
    store = JobStore()
    job = _open_job(store, body)
    if job is None:
        return
    verdict = message_verdict(job, body.get("attempt"))
    if verdict == DROP:
        return  # the message that claimed the job is still around
    if verdict == LATER or (job.status == "running" and not job.lease_expired()):
        raise JobBusy(f"job {job.id} is still running; look again later")
    try:
        job = store.fail_abandoned(
            job, code="worker_failed", message="darkroom could not process this job after repeated attempts."
        )
    except LeaseLost:
        _settle_after_conflict(store, job.id)
        return
    logger.error("dead-lettered job failed", extra={"job_id": job.id, "tenant": job.tenant})
    manifests.ensure(store, job)


def _settle_after_conflict(store: JobStore, job_id: str) -> None:
    """The job changed between our read and our write. Done if it has ended; otherwise look again later."""
    latest = store.get(job_id)
    if latest is None:
        return
    if latest.terminal:
        manifests.ensure(store, latest)
        return
    raise JobBusy(f"job {job_id} changed under this worker ({latest.status}); its message will be seen again")


def _call_budget(remaining_ms: RemainingMs, configured: float) -> tuple[float, float]:
    """(timeout for the provider call, seconds this invocation has left). The call gets `configured` seconds, or
    what the invocation can give after keeping time to store the images; JobBusy when that is too short to start."""
    budget_s = remaining_ms() / 1000
    reserve_s = min(STORE_RESERVE_S, budget_s / 4)
    timeout_s = min(configured, budget_s - reserve_s)
    if timeout_s < min(configured, MIN_CALL_S):
        # A cut-short call would burn an attempt, and if it timed out it would end the job as ambiguous.
        raise JobBusy(f"{budget_s:.0f} s left is not enough for a provider call and storing its images")
    return timeout_s, budget_s


def _route_ready(store: JobStore, job: Job, body: dict[str, Any]) -> tuple[Job, breakers.Gate] | None:
    """The job on the route that may be called for it now: its turn has come (darkroom.ratelimit) and the route's
    breaker lets the call through, moving it to its next route while the breaker is open. None when the message was
    sent again to come back later, or the job ended."""
    while _turn_has_come(job, body):
        lease_s = settings().provider_timeout_s + STORE_RESERVE_S + LEASE_MARGIN_S
        gate = breakers.admit(job.route, probe_lease_s=lease_s)
        if not gate.open:
            return job, gate
        if not job.fallbacks:
            _wait_for_route(store, job, body, gate)
            return None
        job = store.reroute(job, **_next_route(job, "circuit_open"))
        _log_fallback(job)
    return None


def _next_route(job: Job, reason: str) -> dict[str, Any]:
    """What moving the job to its next route writes: the route, the ones left, and why it left this one."""
    route, *rest = job.fallbacks
    tried = {"route": job.route, "reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    return {"route": route, "fallbacks": rest, "routes_tried": [*job.routes_tried, tried]}


def _log_fallback(job: Job) -> None:
    metrics.add_metric(name="ProviderFallbacks", unit="Count", value=1)
    logger.warning(
        "job moved to its fallback route",
        extra={"job_id": job.id, "tenant": job.tenant, "route": job.route, "left": job.routes_tried[-1]},
    )


def _carried(body: dict[str, Any]) -> dict[str, Any]:
    """What a message sent again for a later turn keeps of this one: since when the job has waited for its route's
    breaker, so waiting for turns never restarts that clock."""
    since = _route_down_since(body)
    return {"route_down_since": since} if since is not None else {}


def _route_down_since(body: dict[str, Any]) -> float | None:
    return _epoch_seconds(body.get("route_down_since"))


def _wait_for_route(store: JobStore, job: Job, body: dict[str, Any], gate: breakers.Gate) -> None:
    """The job's only route is open: its message comes back when the breaker may let it through, no attempt spent,
    for ROUTE_DOWN_MAX_WAIT_S at most; then the job fails without a call."""
    now = time.time()
    since = _route_down_since(body)
    since = now if since is None else min(since, now)
    if now - since > ROUTE_DOWN_MAX_WAIT_S:
        job = store.fail_abandoned(
            job,
            code="provider_unavailable",
            message=f"The provider route '{job.route}' kept failing for {ROUTE_DOWN_MAX_WAIT_S // 60} minutes "
            "(its circuit breaker stayed open); the provider was not called for this job.",
        )
        manifests.ensure(store, job)
        return
    assert gate.until is not None
    wait = min(queue.MAX_DELAY_S, math.ceil(gate.until - now + random.uniform(0, 2)))
    queue.send_job(job.id, job.tenant, attempt=job.provider_calls, delay_s=wait, extra={"route_down_since": since})
    metrics.add_metric(name="RouteDownWaits", unit="Count", value=1)
    logger.info("job waits for its route's breaker", extra={"job_id": job.id, "route": job.route, "wait_s": wait})


def _turn_has_come(job: Job, body: dict[str, Any]) -> bool:
    """Whether the job's route may be called for it now (darkroom.ratelimit). If not, its turn is reserved and its
    message sent again to come back then: this one is done, the job unchanged, no attempt spent."""
    turn = _reserved_turn(job, body)
    if turn is None:
        turn = ratelimit.take_turn(job.route, images=int(job.request.get("n", 1)))
    wait = turn.wait_s()
    if wait <= SLEEP_FOR_TURN_S:
        time.sleep(wait)  # cheaper than a round trip through the queue
        return True
    reserved = {"route": job.route, "at": turn.at} if turn.reserved else None
    queue.send_job(
        job.id, job.tenant, attempt=job.provider_calls, delay_s=math.ceil(wait), turn=reserved, extra=_carried(body)
    )
    metrics.add_metric(name="RateLimitWaits", unit="Count", value=1)
    logger.info("job waits for its turn", extra={"job_id": job.id, "route": job.route, "wait_s": round(wait, 1)})
    return False


def _reserved_turn(job: Job, body: dict[str, Any]) -> ratelimit.Turn | None:
    """The turn this message came back for, if it was reserved on the job's current route."""
    turn = body.get("turn")
    if not isinstance(turn, dict) or turn.get("route") != job.route:
        return None
    at = _epoch_seconds(turn.get("at"))
    if at is None:
        return None
    # A turn is never reserved further ahead than MAX_AHEAD_S: one that claims to be is not honoured.
    return ratelimit.Turn(at) if at <= time.time() + ratelimit.MAX_AHEAD_S + SLEEP_FOR_TURN_S else None


def _epoch_seconds(value: Any) -> float | None:
    """A time a message carries, if it is a plain number of seconds (not a bool, NaN, or beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, float | int) or not -1e12 < value < 1e12:
        return None
    return float(value)


def _run(store: JobStore, job: Job, gate: breakers.Gate, remaining_ms: RemainingMs) -> None:
    """One provider call for a queued job: the images themselves, or (asynchronous routes) the submission that
    hands the job to the provider and its poller. Either is billed, so each is made once per claim. An edit's
    inputs are fetched before the claim: nothing slow may sit between the claim and the call."""
    route = job.route
    try:
        _prepare_and_call(store, job, gate, remaining_ms)
    finally:
        breakers.release(route, gate)  # a probe that made no call (or whose outcome is written: a no-op)


def _prepare_and_call(store: JobStore, job: Job, gate: breakers.Gate, remaining_ms: RemainingMs) -> None:
    with contextlib.ExitStack() as inputs:
        try:
            # Sent as files to an OpenAI-compatible route; an asynchronous one gets links to them instead.
            as_files = job.kind == "edit" and not routing.ROUTES[job.route].asynchronous
            files = inputs.enter_context(storage.input_files(job)) if as_files else []
        except Exception as exc:
            if aws.error_code(exc) not in ("404", "NoSuchKey"):
                raise  # S3 may answer next time: the message comes back
            job = store.fail_abandoned(
                job, code="input_missing", message="The edit's input files are gone from storage; submit it again."
            )
            manifests.ensure(store, job)
            return
        _call_provider(store, job, gate, remaining_ms, files)


def _call_provider(
    store: JobStore, job: Job, gate: breakers.Gate, remaining_ms: RemainingMs, files: list[storage.InputFile]
) -> None:
    # Here, not at the top: the sweeper imports this module to recover jobs, and never calls a provider.
    from darkroom.providers.registry import async_provider_for, provider_for
    from darkroom.providers.wavespeed import Submission, WaveSpeedProvider

    asynchronous = routing.ROUTES[job.route].asynchronous
    configured = settings().provider_timeout_s
    timeout_s, budget_s = _call_budget(remaining_ms, min(configured, SUBMIT_TIMEOUT_S) if asynchronous else configured)
    provider = async_provider_for(job.route) if asynchronous else provider_for(job.route)
    provider.prepare()  # key and connection pool first
    job = store.claim(job, lease_s=budget_s + LEASE_MARGIN_S)
    log = {"job_id": job.id, "tenant": job.tenant, "model": job.model, "attempt": job.provider_calls}
    if moderation.enabled():
        # After the claim, so a failed check takes the retry path every failed call takes (it bills nothing).
        if not _passes_moderation(store, job, min(timeout_s, MODERATION_TIMEOUT_S)):
            return
        timeout_s = min(timeout_s, remaining_ms() / 1000 - min(STORE_RESERVE_S, budget_s / 4))
    call_id = f"{job.id}:{job.provider_calls}"
    # A streamed call (partial_images) hands on previews, recorded on the job as they come: the job as last written
    # is the recorder's.
    previews = PreviewRecorder(store, job)
    started = time.monotonic()
    try:
        if isinstance(provider, WaveSpeedProvider):
            # An edit's images go as links the provider fetches; they outlive a slow start of its queue.
            urls = storage.input_urls(job, INPUT_URL_TTL_S) if job.kind == "edit" else None
            outcome: Any = provider.submit(
                job.model, job.request, timeout_s=timeout_s, client_request_id=call_id, image_urls=urls
            )
        elif job.kind == "edit":
            outcome = provider.edit(
                job.request, files, timeout_s=timeout_s, client_request_id=call_id, on_partial=previews
            )
        else:
            outcome = provider.generate(
                job.request, timeout_s=timeout_s, client_request_id=call_id, on_partial=previews
            )
    except ProviderError as exc:
        job = previews.job
        _record_outcome(job, gate, exc)
        _after_failed_call(store, job, exc)
        return
    except Exception:
        # A bug in darkroom's own handling of the call: the request may have gone out, so it is never repeated.
        job = previews.job
        logger.exception("provider call failed unexpectedly", extra=log)
        _fail(store, job, "internal_error", "darkroom failed while calling the provider; " + NOT_REPEATED)
        return
    job = previews.job
    _record_outcome(job, gate, None)
    if isinstance(outcome, Submission):
        polling.begin(store, job, outcome)  # an error here brings the message back, which finds the job polling
        return
    latency_ms = round((time.monotonic() - started) * 1000)
    _learn_limits(job, outcome)
    try:
        _complete(store, job, outcome, {**log, "latency_ms": latency_ms})
    except Exception as exc:
        if isinstance(exc, LeaseLost) or aws.is_aws_error(exc):
            raise  # the message comes back; an expired lease is recovered from what reached S3
        logger.exception("job failed after the provider answered", extra=log)
        _fail(store, job, "internal_error", "darkroom failed while storing the provider's answer.")


NOT_REPEATED = "the call is not repeated because the provider may have billed it."


def _passes_moderation(store: JobStore, job: Job, timeout_s: float) -> bool:
    """The moderation check (darkroom.moderation): a flagged job fails at no image cost; a check that could not be
    made is retried as a call that certainly did not generate."""
    try:
        flagged = moderation.flagged_categories(job, timeout_s=timeout_s)
    except ProviderError as exc:
        # Nothing was generated: on the job's own route, the failure moves it to its fallback as a refused call would.
        unavailable = ModerationUnavailable(f"the moderation check failed: {exc.message}")
        if moderation.route_of(job) == job.route and job.fallbacks:
            _after_failed_call(store, job, unavailable)
        else:
            _retry_unavailable(store, job, unavailable)
        return False
    if not flagged:
        return True
    metrics.add_metric(name="ModerationFlagged", unit="Count", value=1)
    message = f"The moderation check flagged this request ({', '.join(flagged)}); no image was generated."
    _fail(store, job, "moderation_flagged", message, categories=flagged)
    return False


def _route_failed(exc: ProviderError | None) -> bool:
    """Whether a call's outcome counts against its route's breaker: no answer, a 5xx or a garbled one, or the route's
    own key or account refused. A refusal, a rejected request or a 429 is the provider answering, as it should."""
    if isinstance(exc, ProviderRejected):
        return exc.code in ROUTE_REJECTIONS
    return isinstance(exc, ProviderUnavailable | ProviderAmbiguous | ProviderBadResponse)


def _record_outcome(job: Job, gate: breakers.Gate, exc: ProviderError | None) -> None:
    try:
        breakers.record(job.route, gate, failed=_route_failed(exc))
    except Exception:  # the job's own outcome comes first; the next call's outcome counts again
        logger.warning("could not record the call on the route's breaker", exc_info=True, extra={"job_id": job.id})


def _after_failed_call(store: JobStore, job: Job, exc: ProviderError) -> None:
    """A call that did not answer with images: move to the next route if this one certainly did not generate,
    else retry, fail, or (ambiguous) never repeat it."""
    certainly_unbilled = isinstance(exc, ProviderUnavailable) or (
        isinstance(exc, ProviderRejected) and exc.code in ROUTE_REJECTIONS
    )
    if certainly_unbilled and job.fallbacks:
        job = _requeue(store, job, 0, transient_failures=0, **_next_route(job, exc.code))
        _log_fallback(job)
    elif isinstance(exc, ProviderRateLimited):
        _retry_rate_limited(store, job, exc)
    elif isinstance(exc, ProviderUnavailable):
        _retry_unavailable(store, job, exc)
    elif isinstance(exc, ProviderAmbiguous):
        _after_ambiguous_call(store, job, exc)
    else:
        _fail(store, job, exc.code, exc.message)


def _complete(store: JobStore, job: Job, result: GenerationResult, log: dict[str, Any]) -> None:
    """The provider answered and has billed: store the images first, then what is merely bookkeeping."""
    job = store.advance(job, phase="storing", usage=result.usage)
    outputs = []
    for index, data in enumerate(result.images):
        try:
            info = images.inspect(data)
        except ProviderBadResponse as exc:
            _fail(store, job, exc.code, exc.message)
            return
        outputs.append(storage.put_output(job, index, data, info))
    cost = _cost(job, result.usage)
    job = store.finish(job, "succeeded", outputs=outputs, cost_usd=cost)
    manifests.publish(store, job)
    metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
    metrics.add_metric(name="ProviderLatency", unit="Milliseconds", value=log["latency_ms"])
    metrics.add_metric(name="ImagesGenerated", unit="Count", value=len(outputs))
    logger.info("job succeeded", extra={**log, "cost_usd": str(cost), "images": len(outputs)})


def _cost(job: Job, usage: Any) -> Decimal | None:
    try:
        return pricing.cost_usd(job.model, usage)
    except Exception:  # the images are stored either way; a missing cost is visible, a lost job is not
        logger.exception("could not price the provider's usage", extra={"job_id": job.id})
        return None


def _after_ambiguous_call(store: JobStore, job: Job, exc: ProviderAmbiguous) -> None:
    metrics.add_metric(name="ProviderAmbiguousCalls", unit="Count", value=1)
    logger.warning("provider call may have been billed without an answer", extra={"job_id": job.id, "code": exc.code})
    if settings().retry_ambiguous_provider_calls:
        _retry_unavailable(store, job, exc)
        return
    if routing.ROUTES[job.route].asynchronous:
        # The provider may have taken the job and be rendering it now, with no id for darkroom to follow it by.
        _fail(store, job, "interrupted", f"The submission's answer was lost ({exc.message}); {NOT_REPEATED}")
        return
    _fail(store, job, exc.code, f"{exc.message}; {NOT_REPEATED}")


def recover_abandoned(store: JobStore, job: Job) -> None:
    """The previous owner died after starting a provider call. Never call again: finish from S3 or fail."""
    if job.phase == "storing":
        found = storage.stored_outputs(job)
        expected = int(job.request.get("n", 1))
        if sorted(found) == list(range(expected)):
            job = _finish_abandoned(store, job, outputs=[found[i] for i in range(expected)])
            manifests.publish(store, job)
            return
    job = store.fail_abandoned(
        job,
        code="interrupted",
        message="The worker stopped during this job after the provider was called; " + NOT_REPEATED,
    )
    logger.error("job interrupted mid-call", extra={"job_id": job.id, "tenant": job.tenant})
    manifests.ensure(store, job)


def _finish_abandoned(store: JobStore, job: Job, outputs: list[dict[str, Any]]) -> Job:
    job = store.take_over(job, LEASE_MARGIN_S)
    return store.finish(job, "succeeded", outputs=outputs, cost_usd=_cost(job, job.usage))


def _learn_limits(job: Job, result: GenerationResult) -> None:
    if result.rate_limits:
        try:
            ratelimit.learn(job.route, result.rate_limits)
        except Exception:  # the images come first; the limits are announced again with the next answer
            logger.warning("could not record the provider's rate limits", exc_info=True, extra={"job_id": job.id})


def _retry_rate_limited(store: JobStore, job: Job, exc: ProviderRateLimited) -> None:
    s = settings()
    try:
        ratelimit.hold_off(job.route, exc.retry_after_s)  # every worker waits, not only this job
    except Exception:
        logger.warning("could not hold the route off after a 429", exc_info=True, extra={"job_id": job.id})
    if job.rate_limits + 1 > s.rate_limit_max_requeues:
        _fail(store, job, "rate_limited", f"The provider kept rate-limiting this job ({job.rate_limits + 1} times).")
        return
    delay = exc.retry_after_s + random.uniform(0, 1)
    _requeue(store, job, delay, rate_limits=job.rate_limits + 1)


def _retry_unavailable(store: JobStore, job: Job, exc: ProviderUnavailable | ProviderAmbiguous) -> None:
    s = settings()
    failures = job.transient_failures + 1
    if failures >= s.provider_max_attempts:
        _fail(store, job, exc.code, f"{exc.message} (gave up after {failures} attempts)")
        return
    delay = s.retry_base_delay_s * 2 ** (failures - 1) * random.uniform(1, 1.5)
    _requeue(store, job, delay, transient_failures=failures)


def _requeue(store: JobStore, job: Job, delay_s: float, **sets: Any) -> Job:
    delay = max(1, min(queue.MAX_DELAY_S, round(delay_s))) if math.isfinite(delay_s) else queue.MAX_DELAY_S
    at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds").replace("+00:00", "Z")
    job = store.requeue(job, next_attempt_at=at, **sets)
    queue.send_job(job.id, job.tenant, attempt=job.provider_calls, delay_s=delay)
    store.message_sent(job)
    metrics.add_metric(name="JobsRetried", unit="Count", value=1)
    counters = {name: value for name, value in sets.items() if isinstance(value, int)}
    logger.info(
        "job requeued",
        extra={"job_id": job.id, "tenant": job.tenant, "delay_s": delay, "route": job.route, **counters},
    )
    return job


def _fail(store: JobStore, job: Job, code: str, message: str, **details: Any) -> None:
    job = store.finish(job, "failed", error={"code": code, "message": message, **details})
    manifests.publish(store, job)
    metrics.add_metric(name="JobsFailed", unit="Count", value=1)
    logger.info("job failed", extra={"job_id": job.id, "tenant": job.tenant, "error_code": code})
