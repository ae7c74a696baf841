"""Webhook endpoint requests: registration and changes, validated as every request is (each broken rule named),
the SSRF guard included. Apart from darkroom.models so that job submission never builds these models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from darkroom import addresses
from darkroom.errors import FieldError, ValidationFailed
from darkroom.models import DEFAULT_WEBHOOK_EVENTS, field_errors_from_pydantic
from darkroom.models import WebhookEvents as Events


class WebhookEndpointRequest(BaseModel):
    """`POST /v1/webhooks/endpoints`: where a tenant wants events about its jobs."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    events: Events = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS),
        description="Which events to send: every end of a job by default; job.progress only when named.",
    )
    description: Annotated[str, StringConstraints(max_length=256)] = ""
    enabled: bool = True


def parse_webhook_endpoint(
    body: Any, *, allow_http: bool = False, allow_private: bool = False
) -> WebhookEndpointRequest:
    """Validate an endpoint registration, the SSRF guard included; ValidationFailed naming each broken rule."""
    try:
        request = WebhookEndpointRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(field_errors_from_pydantic(exc)) from None
    problem = addresses.url_problem(request.url, allow_http=allow_http, allow_private=allow_private)
    if problem:
        raise ValidationFailed([FieldError("url", "url_not_allowed", f"darkroom will not send to url: {problem}.")])
    return request


class WebhookEndpointUpdate(BaseModel):
    """`PATCH /v1/webhooks/endpoints/{id}`: what changes; `enabled: true` turns a disabled endpoint back on."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    events: Events | None = None
    description: Annotated[str, StringConstraints(max_length=256)] | None = None
    enabled: bool | None = None


def parse_webhook_endpoint_update(
    body: Any, *, allow_http: bool = False, allow_private: bool = False
) -> WebhookEndpointUpdate:
    try:
        update = WebhookEndpointUpdate.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(field_errors_from_pydantic(exc)) from None
    problem = (
        addresses.url_problem(update.url, allow_http=allow_http, allow_private=allow_private) if update.url else None
    )
    if problem:
        raise ValidationFailed([FieldError("url", "url_not_allowed", f"darkroom will not send to url: {problem}.")])
    return update
