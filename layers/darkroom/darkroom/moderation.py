"""The optional moderation check before any image call (MODERATION_MODE, from the template's ModerationMode).

`prompt` sends the prompt to OpenAI's `/v1/moderations` (`omni-moderation-latest`), through the job's own route when
it speaks OpenAI's API (a job that moved to its fallback is checked there), else through the openai route's;
`prompt_and_images` also sends an edit's input images, as links to them the moderation model downloads, one image
per request with the prompt in the first. A flagged job fails `moderation_flagged` with the categories, before
anything is billed. Moderation is free, so a check that failed is simply made again (darkroom.jobs.run).
"""

from __future__ import annotations

from typing import Any

from darkroom import routing, storage
from darkroom.jobs.store import Job
from darkroom.settings import settings

MODES = ("off", "prompt", "prompt_and_images")
# How long the moderation model's links to an edit's inputs stay valid: it fetches them at once.
IMAGE_URL_TTL_S = 300


def enabled() -> bool:
    return settings().moderation_mode in MODES[1:]


def requests_for(job: Job, mode: str) -> list[list[dict[str, Any]]]:
    """The moderation requests that check the job: its prompt with its first input image, then one image each."""
    text = {"type": "text", "text": str(job.request.get("prompt", ""))}
    urls = storage.input_urls(job, IMAGE_URL_TTL_S) if mode == "prompt_and_images" and job.kind == "edit" else []
    images = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [[text, *images[:1]], *([image] for image in images[1:])]


def route_of(job: Job) -> str:
    """The route whose endpoint checks the job: its own when it speaks OpenAI's API."""
    return "openai" if routing.ROUTES[job.route].asynchronous else job.route


def flagged_categories(job: Job, *, timeout_s: float) -> list[str]:
    """What the moderation model flags in the job's inputs (none when the check is off)."""
    mode = settings().moderation_mode
    if mode not in MODES[1:]:
        return []
    from darkroom.providers.registry import provider_for  # the worker has it already; the sweeper need not

    provider = provider_for(route_of(job))
    flagged: set[str] = set()
    for inputs in requests_for(job, mode):
        flagged.update(provider.moderate(inputs, timeout_s=timeout_s))
    return sorted(flagged)
