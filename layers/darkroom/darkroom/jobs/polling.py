"""Jobs on asynchronous providers, from the submission the provider took to their end.

The worker submits once (`begin` records the prediction id, then starts the job's poller execution). The execution
loops Wait -> `poll_once` -> Choice; each poll asks the provider how the prediction is going and says how long to
wait before the next. When the prediction ends, the poll that sees it stores the outputs and ends the job, through
writes conditional on the job still `polling` that prediction: a cancel, the sweeper or a second poll racing it
changes nothing twice. Polls bill nothing, so a failed one is simply tried again, a few times in a row at most.

Waits adapt: the first is about the job's typical render time (by quality and size), so a job that takes that long
is usually seen done at the first poll; after it they start at a third of it and double up to a cap, so a job done
within twice its typical time is seen by the third poll, and a slow job costs few polls. Every wait ends by the job's
polling deadline, when it fails as provider_timeout.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from darkroom import catalog, images, routing, storage
from darkroom.errors import ProviderBadResponse, ProviderPollFailed
from darkroom.jobs import executions, manifests
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.observability import logger, metrics
from darkroom.settings import settings

if TYPE_CHECKING:  # the provider adapters (and httpx) are imported where a poll is made: the sweeper rarely makes one
    from darkroom.providers.wavespeed import Prediction, Submission, WaveSpeedProvider

POLL_TIMEOUT_S = 10.0
DOWNLOAD_TIMEOUT_S = 60.0
# How long after its polling deadline a job's execution should surely have ended; the sweeper looks then.
EXECUTION_MARGIN_S = 600.0
MIN_WAIT_S = 1
# An execution's history holds at most 25,000 events and one poll writes 9 (Wait, Task and Choice entered and exited,
# the task scheduled, started and succeeded): room for 2,000 polls and their retries. A full history fails the
# execution where no Catch can act.
MAX_POLLS = 2_000
QUALITY_FACTORS = {"low": 0.5, "medium": 1.0, "auto": 1.0, "high": 2.0}
LARGE_PIXELS = 1536 * 1024  # larger than every standard size: twice the render time
MAY_HAVE_CHARGED = "the provider may still have charged for it."


def typical_render_s(job: Job) -> float:
    """How long the job's image usually takes: AsyncFirstPollSeconds for a medium image of a standard size, scaled
    by quality and size (OpenAI's gpt-image-2 typically takes 8-30 s, high quality at large sizes minutes)."""
    seconds = settings().async_first_poll_s * QUALITY_FACTORS.get(str(job.request.get("quality", "auto")), 1.0)
    dims = catalog.parse_size(str(job.request.get("size", "auto")))
    if dims and dims[0] * dims[1] > LARGE_PIXELS:
        seconds *= 2
    return seconds


def first_wait_s(job: Job) -> int:
    return max(MIN_WAIT_S, math.ceil(typical_render_s(job)))


def next_wait_s(polls: int, job: Job) -> int:
    """Seconds to wait after the `polls`-th poll: a third of the first wait, doubling with each poll up to the cap,
    and never past the job's polling deadline (plus a second, so the poll that sees it expired comes promptly). A job
    done within twice its typical time is seen done by the third poll: 10 state transitions at most."""
    s = settings()
    wait = min(s.poll_max_wait_s, max(MIN_WAIT_S, typical_render_s(job) / 3) * 2 ** min(polls - 1, 20))
    # However the waits are configured, the whole deadline fits in MAX_POLLS polls.
    wait = max(wait, s.poll_timeout_s / MAX_POLLS)
    if job.poll_until is not None:
        wait = min(wait, max(0.0, job.poll_until - time.time()) + 1)
    return max(MIN_WAIT_S, math.ceil(wait))


def execution_input(job: Job) -> dict[str, Any]:
    """What the job's execution starts from; always the same for one job, so a repeated start is the same start."""
    return {"job_id": job.id, "poll": {"done": False, "wait_s": first_wait_s(job), "polls": 0, "failed_polls": 0}}


# The worker's side: after the provider took the submission.


def begin(store: JobStore, job: Job, submission: Submission) -> None:
    """Record the prediction on the job (before anything else: every later step follows it), then start the poller.
    If the start fails, the message comes back and `ensure_poller` starts it; failing that, the sweeper does."""
    try:
        job = store.start_polling(
            job,
            prediction_id=submission.prediction_id,
            provider_status=submission.status,
            poll_until=time.time() + settings().poll_timeout_s,
        )
    except Exception:
        # The provider has the job but darkroom could not record it: the job will end `interrupted` when its lease
        # runs out. The id in this log line is how an operator finds the provider's side.
        logger.error(
            "could not record a submitted job's prediction",
            extra={"job_id": job.id, "route": job.route, "prediction_id": submission.prediction_id},
        )
        raise
    metrics.add_metric(name="AsyncJobsSubmitted", unit="Count", value=1)
    logger.info("job submitted", extra={"job_id": job.id, "tenant": job.tenant, "route": job.route})
    ensure_poller(store, job)


def ensure_poller(store: JobStore, job: Job) -> None:
    """Start the polling job's execution unless it has one, then tell the sweeper when to look again."""
    if executions.start(job.id, execution_input(job)):
        logger.info("poller started", extra={"job_id": job.id})
    store.poller_started(job, check_at=(job.poll_until or time.time()) + EXECUTION_MARGIN_S)


# The poller function's side: one step of the execution.


def poll_once(job_id: str, polls: int, failed_polls: int) -> dict[str, Any]:
    """Ask the provider once; end the job if its prediction has ended. Returns the execution's next poll state."""
    store = JobStore()
    job = store.get(job_id)
    if job is None or job.status != "polling":
        return _done()  # canceled, or ended by someone else
    from darkroom.providers.registry import async_provider_for

    provider = async_provider_for(job.route)
    polls += 1
    try:
        prediction = provider.poll(job.prediction_id or "", timeout_s=_poll_timeout_s())
        if prediction.ended:
            _conclude(store, job, provider, prediction)
            return _done()
        failed_polls = 0
        if prediction.status != job.provider_status:
            job = store.record_provider_status(job, prediction.status)
    except ProviderPollFailed as exc:
        failed_polls += 1
        logger.warning("poll failed", extra={"job_id": job.id, "failed_polls": failed_polls, "reason": exc.message})
        if failed_polls > settings().poll_failures_tolerated:
            end(store, job, "failed", error=("provider_unavailable", f"{exc.message} ({failed_polls} polls in a row)"))
            return _done()
    except LeaseLost:
        return _done()  # the job moved on under this poll (a cancel)
    if job.poll_until is not None and time.time() > job.poll_until:
        seconds = round(settings().poll_timeout_s)
        end(store, job, "failed", error=("provider_timeout", f"The provider did not finish within {seconds} s."))
        return _done()
    return {"done": False, "wait_s": next_wait_s(polls, job), "polls": polls, "failed_polls": failed_polls}


def give_up(job_id: str, failure: Any) -> dict[str, Any]:
    """The execution could not go on polling (darkroom's own errors, repeated): end the job, saying why."""
    store = JobStore()
    job = store.get(job_id)
    if job is None or job.status != "polling":
        return _done()
    name = str(failure.get("Error", "")) if isinstance(failure, dict) else ""
    logger.error("poller gave up on a job", extra={"job_id": job.id, "tenant": job.tenant, "error": name[:100]})
    message = f"darkroom could not follow the provider's work on this job to its end; {MAY_HAVE_CHARGED}"
    end(store, job, "failed", error=("poller_failed", message))
    return _done()


# The sweeper's side: a polling job whose execution should have ended by now, or was never started.


def check_on(store: JobStore, job: Job) -> str:
    """What became of the job's execution: started (it had none), still running, or ended with the job finished
    from one last poll. Returns which."""
    state = executions.status(job.id)
    if state is None:
        ensure_poller(store, job)
        return "started"
    if state == executions.RUNNING and time.time() < (job.poll_until or 0) + EXECUTION_MARGIN_S:
        store.poller_started(job, check_at=(job.poll_until or time.time()) + EXECUTION_MARGIN_S)
        return "running"
    if state == executions.RUNNING:
        executions.stop(job.id, cause="darkroom's sweeper: the job is past its polling deadline")
    # One last look, which ends the job whatever it finds: nothing will look again.
    from darkroom.providers.registry import async_provider_for

    provider = async_provider_for(job.route)
    try:
        prediction = provider.poll(job.prediction_id or "", timeout_s=_poll_timeout_s())
        if prediction.ended:
            _conclude(store, job, provider, prediction)
            return "ended"
        reason = f"the provider still reported {prediction.status}"
    except ProviderPollFailed as exc:
        reason = exc.message  # the provider unreachable, or an output that could not be fetched
    message = f"The job's poller stopped before darkroom could finish it ({reason}); {MAY_HAVE_CHARGED}"
    end(store, job, "failed", error=("poller_failed", message))
    return "ended"


# Ending a job.


def _conclude(store: JobStore, job: Job, provider: WaveSpeedProvider, prediction: Prediction) -> None:
    """The prediction has ended: store its outputs and succeed, or fail with the provider's reason."""
    log = {"job_id": job.id, "tenant": job.tenant, "route": job.route, "provider_status": prediction.status}
    said: dict[str, Any] = {"provider_status": prediction.status}
    if prediction.nsfw:
        end(
            store,
            job,
            "failed",
            error=("moderation_blocked", "The provider flagged the result as unsafe content."),
            **said,
        )
        return
    if prediction.status != "completed":
        reason = prediction.error or "no reason given"
        end(
            store,
            job,
            "failed",
            error=("provider_failed", f"The provider's job ended {prediction.status}: {reason}"),
            **said,
        )
        return
    if not prediction.outputs:
        end(store, job, "failed", error=("provider_bad_response", "The provider finished without any output."), **said)
        return
    outputs = []
    for index, url in enumerate(prediction.outputs[: int(job.request.get("n", 1))]):
        try:
            data = provider.download(url, timeout_s=DOWNLOAD_TIMEOUT_S)
            outputs.append(storage.put_output(job, index, data, images.inspect(data)))
        except ProviderBadResponse as exc:
            end(store, job, "failed", error=(exc.code, exc.message), **said)
            return
    price = routing.ROUTES[job.route].price_per_image
    cost = price * len(outputs) if price is not None else None
    end(store, job, "succeeded", outputs=outputs, cost_usd=cost, **said)
    metrics.add_metric(name="ImagesGenerated", unit="Count", value=len(outputs))
    logger.info("job succeeded", extra={**log, "images": len(outputs), "inference_ms": prediction.inference_ms})


def end(store: JobStore, job: Job, status: str, *, error: tuple[str, str] | None = None, **sets: Any) -> None:
    """The job's terminal write, then its manifest. Nothing to do if it ended meanwhile (canceled, say)."""
    try:
        job = store.finish_polling(
            job, status, error={"code": error[0], "message": error[1]} if error else None, **sets
        )
    except LeaseLost:
        return
    manifests.publish(store, job)
    metrics.add_metric(name="JobsSucceeded" if status == "succeeded" else "JobsFailed", unit="Count", value=1)
    if error:
        logger.info("job failed", extra={"job_id": job.id, "tenant": job.tenant, "error_code": error[0]})


def _done() -> dict[str, Any]:
    return {"done": True, "wait_s": 0, "polls": 0, "failed_polls": 0}


def handle_step(event: Any) -> dict[str, Any]:
    """One task of the poller state machine: `{"action": "poll", "job_id", "poll": {...}}` polls once,
    `{"action": "give_up", "job_id", "failure": {"Error", "Cause"}}` ends the job after the machine's retries."""
    if not isinstance(event, dict) or not isinstance(event.get("job_id"), str):
        raise ValueError("a poller step names its job")
    if event.get("action") == "give_up":
        return give_up(event["job_id"], event.get("failure"))
    state = event["poll"] if isinstance(event.get("poll"), dict) else {}
    return poll_once(event["job_id"], _count(state.get("polls")), _count(state.get("failed_polls")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _poll_timeout_s() -> float:
    return min(POLL_TIMEOUT_S, settings().provider_timeout_s)
