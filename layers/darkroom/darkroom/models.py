"""Request models and the rules that depend on the model table.

Validation runs in two passes that report together: pydantic checks each field's type and range, then
`generation_rule_errors` checks what depends on the chosen model (sizes, qualities, backgrounds). A client sees
every broken rule at once, each naming its field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from darkroom import catalog, routing
from darkroom.errors import FieldError, ValidationFailed
from darkroom.webhooks import events

MAX_PROMPT_CHARS = 32_000
MAX_METADATA_PAIRS = 16

WebhookEvent = Literal["job.succeeded", "job.failed", "job.canceled", "job.progress"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("job.succeeded", "job.failed", "job.canceled", "job.progress")
# What is sent when a job or endpoint names no events (darkroom.webhooks.events, which notify reads without pydantic).
DEFAULT_WEBHOOK_EVENTS = cast(tuple[WebhookEvent, ...], events.DEFAULT_EVENTS)


def _each_once(events: list[WebhookEvent]) -> list[WebhookEvent]:
    repeated = sorted({event for event in events if events.count(event) > 1})
    if repeated:
        raise PydanticCustomError(
            "events_repeated", "List each event at most once; repeated: {repeated}.", {"repeated": ", ".join(repeated)}
        )
    return events


# Each event at most once: a list is stored with its job or endpoint, and a long one would outgrow the item.
WebhookEvents = Annotated[
    list[WebhookEvent], Field(min_length=1, max_length=len(WEBHOOK_EVENTS)), AfterValidator(_each_once)
]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class GenerationRequest(BaseModel):
    """OpenAI's `POST /v1/images/generations` body for GPT image models, plus darkroom's job fields."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]
    model: str = catalog.DEFAULT_MODEL
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str = "auto"
    quality: str = "auto"
    background: Literal["transparent", "opaque", "auto"] = "auto"
    output_format: str = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    moderation: Literal["low", "auto"] = "auto"
    complexity: Literal["low", "medium", "high"] | None = None
    safety_identifier: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    user: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Deprecated by OpenAI; sent on as safety_identifier."
    )
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = Field(
        default=None,
        description="Previews to show on the job while it renders (1-3, n=1 only): the provider streams them.",
    )
    tier: Literal["standard", "batch"] | None = Field(
        default=None,
        description="batch: sent with others through OpenAI's Batch API at half the price, done within 24 hours.",
    )
    cache: bool | None = Field(
        default=None,
        description="Reuse the images of one of the tenant's succeeded cached jobs with the same request and inputs, "
        "at no provider cost, instead of generating (n=1; for n>1 also send cache_variations: true).",
    )
    cache_variations: bool | None = Field(
        default=None,
        description="With cache and n>1: the n images may be another job's n, though they are meant to differ.",
    )
    # Accepted only so that they can be refused with a useful message.
    stream: bool | None = None
    response_format: str | None = None
    style: str | None = None
    # darkroom's own fields, kept with the job.
    provider: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The provider route to run on (openai, wavespeed); the model's default if absent."
    )
    webhook_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)] | None = None
    webhook_events: WebhookEvents | None = Field(
        default=None,
        description="Which events go to webhook_url: job.succeeded, job.failed, job.canceled (the default: all "
        "three), and job.progress (each preview, only when named).",
    )

    def route_fields(self) -> dict[str, Any]:
        """The request's values a route judges (an edit's inputs are judged apart: see edit_rule_errors); no previews
        (`partial_images: 0`) is the default every route honours."""
        fields = {name: value for name, value in self if name not in ("images", "mask", "markup")}
        return {**fields, "partial_images": fields.get("partial_images") or None}

    def provider_params(self) -> dict[str, Any]:
        """The body to send to an OpenAI-compatible provider: only what it understands, defaults left out (no
        previews is no `partial_images`: the provider adapter streams only when it is set)."""
        params = self.model_dump(exclude_none=True, exclude=set(NOT_FOR_PROVIDER))
        if not params.get("partial_images"):
            params.pop("partial_images", None)
        if self.user and not self.safety_identifier:
            params["safety_identifier"] = self.user
        return params


# Fields darkroom keeps, refuses, or sends in another form (an edit's images go as files).
NOT_FOR_PROVIDER = (
    "provider",
    "cache",
    "cache_variations",
    "webhook_url",
    "webhook_events",
    "metadata",
    "user",
    "stream",
    "tier",
    "response_format",
    "style",
    "images",
    "mask",
    "markup",
)


class JobOutputReference(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    job_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    index: Annotated[int, Field(ge=0, le=9)] = 0


class ImageSource(BaseModel):
    """One input image in a JSON edit: its bytes, or where darkroom already holds it. Exactly one field."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    b64_json: str | None = Field(default=None, description="The image's bytes, base64-encoded.")
    image_url: str | None = Field(default=None, description="A data: URL (OpenAI's JSON form); no fetched URLs.")
    file: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        default=None, description="A file under the tenant's uploads/{tenant}/ prefix, e.g. drop/photo.png."
    )
    job_output: JobOutputReference | None = Field(default=None, description="An output of one of the tenant's jobs.")

    def kind(self) -> str | None:
        given = [name for name in ("b64_json", "image_url", "file", "job_output") if getattr(self, name) is not None]
        return given[0] if len(given) == 1 else None


class EditRequest(GenerationRequest):
    """OpenAI's `POST /v1/images/edits` fields. In JSON the images come as `images` (and `mask`, `markup`); in a
    multipart form as file parts, which the edit route reads beside this model."""

    input_fidelity: Literal["high", "low"] | None = None
    images: list[ImageSource] | None = None
    mask: ImageSource | None = None
    markup: ImageSource | None = None


def parse_generation_request(
    body: Any,
    *,
    allow_http_webhooks: bool = False,
    allow_private_webhooks: bool = False,
    routes: routing.RouteConfig | None = None,
) -> GenerationRequest:
    """Validate a decoded JSON body; raises ValidationFailed listing every broken rule. `routes` is the deployment's
    (settings().routes): which provider routes are enabled, and each model's default."""
    return _parse(
        GenerationRequest,
        body,
        [],
        allow_http_webhooks=allow_http_webhooks,
        allow_private_webhooks=allow_private_webhooks,
        routes=routes or routing.RouteConfig(),
    )


def parse_edit_request(
    body: Any,
    *,
    files: dict[str, int] | None = None,
    allow_http_webhooks: bool = False,
    allow_private_webhooks: bool = False,
    routes: routing.RouteConfig | None = None,
) -> EditRequest:
    """An edit's fields, judged as a generation's plus the edit rules. `files` counts a multipart form's file parts
    by field (image, mask, markup); a JSON edit names its images in the body instead, and may not also send files."""
    rules: dict[str, Any] = {
        "allow_http_webhooks": allow_http_webhooks,
        "allow_private_webhooks": allow_private_webhooks,
        "routes": routes or routing.RouteConfig(),
    }
    extra: list[FieldError] = []
    if isinstance(body, dict) and files is not None:
        extra += [
            FieldError(name, "json_field_in_form", f"Send {name} as a file part of the form.")
            for name in ("images", "mask", "markup")
            if name in body
        ]
        body = {k: v for k, v in body.items() if k not in ("images", "mask", "markup")}
    request = _parse(EditRequest, body, extra, files=files, **rules)
    assert isinstance(request, EditRequest)
    return request


class UploadFiles(BaseModel):
    """The files an upload job waits for: how many images, and whether a mask or a markup follows."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    images: Annotated[int, Field(ge=1, le=catalog.MAX_EDIT_IMAGES)] = 1
    mask: bool = False
    markup: bool = False


def upload_files(body: Any) -> UploadFiles:
    """POST /v1/uploads' `files`, checked on its own: its counts are what the edit rules then judge."""
    files = body.get("files", {}) if isinstance(body, dict) else {}
    try:
        return UploadFiles.model_validate(files)
    except ValidationError as exc:
        errors = [
            FieldError(f"files.{error.field}" if error.field != "body" else "files", error.rule, error.message)
            for error in field_errors_from_pydantic(exc)
        ]
        raise ValidationFailed(errors) from None


def parse_upload_request(body: Any, files: UploadFiles, **rules: Any) -> EditRequest:
    """An upload's edit fields, judged as an edit with `files` standing for the form parts still to come. The files'
    own rules report on `files.*`."""
    fields = {k: v for k, v in body.items() if k != "files"} if isinstance(body, dict) else body
    counts = {"image": files.images, "mask": int(files.mask), "markup": int(files.markup)}
    sent = [name for name in ("images", "mask", "markup") if isinstance(fields, dict) and name in fields]
    misplaced = [
        FieldError(name, "upload_files", f"An upload's files come by presigned POST: say files.{name} instead.")
        for name in sent
    ]
    try:
        request = parse_edit_request(
            {k: v for k, v in fields.items() if k not in sent} if sent else fields, files=counts, **rules
        )
    except ValidationFailed as exc:
        renamed = {"image": "files.images", "mask": "files.mask", "markup": "files.markup"}
        raise ValidationFailed(
            [FieldError(renamed.get(e.field, e.field), e.rule, e.message) for e in exc.errors] + misplaced
        ) from None
    if misplaced:
        raise ValidationFailed(misplaced)
    return request


def _parse(model: type[GenerationRequest], body: Any, extra: list[FieldError], **rules: Any) -> GenerationRequest:
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        errors = field_errors_from_pydantic(exc)
        if isinstance(body, dict):
            errors += _rule_errors_of_valid_fields(model, body, errors, **rules)
        raise ValidationFailed(errors + extra) from None
    errors = _all_rule_errors(request, **rules) + extra
    if errors:
        raise ValidationFailed(errors)
    return request


def _all_rule_errors(
    request: GenerationRequest, *, files: dict[str, int] | None = None, **rules: Any
) -> list[FieldError]:
    errors = generation_rule_errors(request, **rules)
    if isinstance(request, EditRequest):
        errors += edit_rule_errors(request, files, routes=rules["routes"])
    return errors


def _rule_errors_of_valid_fields(
    model: type[GenerationRequest], body: dict[str, Any], type_errors: list[FieldError], **rules: Any
) -> list[FieldError]:
    """The model rules, checked on the fields that passed the type checks, so one answer lists every problem."""
    failed = {error.field.split(".")[0] for error in type_errors}
    valid = {k: v for k, v in body.items() if k in model.model_fields and k not in failed}
    partial = model.model_construct(**{"prompt": "-", **valid})  # fields already checked: no revalidation
    rule_errors = _all_rule_errors(partial, **rules)
    return [error for error in rule_errors if error.field.split(".")[0] not in failed]


def edit_rule_errors(
    request: EditRequest, files: dict[str, int] | None, *, routes: routing.RouteConfig
) -> list[FieldError]:
    """How many images, which of mask and markup, and what the model takes. Field names follow the form the client
    used: `image` for a form's file parts, `images` in JSON."""
    form = files is not None
    counts = files if files is not None else {"image": len(request.images or [])}
    images_field = "image" if form else "images"
    count = counts.get("image", 0)
    errors: list[FieldError] = []
    if count == 0:
        errors.append(FieldError(images_field, "image_required", "An edit needs at least one image."))
    elif count > catalog.MAX_EDIT_IMAGES:
        errors.append(
            FieldError(
                images_field, "too_many_images", f"An edit takes at most {catalog.MAX_EDIT_IMAGES} images; got {count}."
            )
        )
    has_mask = (counts.get("mask", 0) if form else int(request.mask is not None)) > 0
    has_markup = (counts.get("markup", 0) if form else int(request.markup is not None)) > 0
    for name in ("mask", "markup"):
        if form and counts.get(name, 0) > 1:
            errors.append(FieldError(name, f"one_{name}", f"Send at most one {name}."))
    if not form:
        errors += _source_errors(request)
    spec = catalog.MODELS.get(request.model)
    if spec is None:
        return errors  # reported with the generation rules
    if request.input_fidelity is not None and request.input_fidelity not in spec.input_fidelities:
        if spec.input_fidelities:
            takes = f"takes input_fidelity {' or '.join(spec.input_fidelities)} only."
        elif spec.name.startswith("gpt-image-2"):
            takes = "does not take input_fidelity (it always works at high fidelity)."
        else:
            takes = "does not take input_fidelity."
        errors.append(FieldError("input_fidelity", "input_fidelity_not_supported", f"{spec.name} {takes}"))
    if has_markup and not spec.markup:
        errors.append(FieldError("markup", "markup_not_supported", f"{spec.name} does not take a markup overlay."))
    if has_markup and has_mask:
        errors.append(FieldError("markup", "markup_with_mask", "markup cannot be combined with mask; send one."))
    if has_markup and request.tier == "batch":
        errors.append(FieldError("markup", "markup_not_batched", "OpenAI's Batch API takes no markup overlay."))
    # What the route cannot do with the inputs (WaveSpeed takes neither a mask nor a markup); the rest of the
    # route's verdict is part of the generation rules.
    inputs: dict[str, object] = {"model": request.model, "mask": has_mask or None, "markup": has_markup or None}
    errors += [e for e in routing.route_errors(inputs, request.provider, routes) if e.field in ("mask", "markup")]
    return errors


def _source_errors(request: EditRequest) -> list[FieldError]:
    sources = [(f"images[{i}]", source) for i, source in enumerate(request.images or [])]
    sources += [(name, getattr(request, name)) for name in ("mask", "markup") if getattr(request, name) is not None]
    # A request rebuilt from the fields that passed their type checks (one answer, every problem) holds its sources
    # as the plain objects they were: validated already, so building them cannot fail.
    return [
        FieldError(name, "image_source", "Give exactly one of b64_json, image_url, file or job_output.")
        for name, source in sources
        if ImageSource.model_validate(source).kind() is None
    ]


def field_errors_from_pydantic(exc: ValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        errors.append(FieldError(field=field, rule=error["type"], message=error["msg"]))
    return errors


def generation_rule_errors(
    request: GenerationRequest,
    *,
    allow_http_webhooks: bool,
    routes: routing.RouteConfig,
    allow_private_webhooks: bool = False,
) -> list[FieldError]:
    errors: list[FieldError] = []
    if not request.prompt.strip():
        errors.append(FieldError("prompt", "prompt_blank", "The prompt must contain more than white space."))
    errors += _legacy_parameter_errors(request)
    errors += _preview_errors(request)
    errors += _cache_errors(request)
    errors += _webhook_errors(request.webhook_url, allow_http=allow_http_webhooks, allow_private=allow_private_webhooks)
    errors += _format_errors(request)
    spec = catalog.MODELS.get(request.model)
    if spec is None:
        errors.append(_model_error(request.model))
        return errors
    errors += _size_errors(request.size, spec)
    errors += _quality_errors(request.quality, spec)
    errors += _background_errors(request, spec)
    errors += routing.route_errors(request.route_fields(), request.provider, routes)
    return errors


def _model_error(model: str) -> FieldError:
    if model in catalog.RETIRED_MODELS:
        retired_on, replacement = catalog.RETIRED_MODELS[model]
        return FieldError(
            "model", "model_retired", f"'{model}' was retired on {retired_on}; use '{replacement}' instead."
        )
    return FieldError(
        "model", "model_unknown", f"Unknown model '{model}'. Supported: {', '.join(sorted(catalog.MODELS))}."
    )


def _size_errors(size: str, spec: catalog.ModelSpec) -> list[FieldError]:
    if size == "auto" or size in catalog.STANDARD_SIZES:
        return []
    standard = ", ".join(("auto", *catalog.STANDARD_SIZES))
    dims = catalog.parse_size(size)
    if dims is None:
        return [
            FieldError("size", "size_format", f"Size must be 'auto' or WIDTHxHEIGHT such as 1536x1024 ({standard}).")
        ]
    if not spec.flexible_sizes:
        return [FieldError("size", "size_not_supported", f"{spec.name} supports only these sizes: {standard}.")]
    width, height = dims
    errors = []
    if width % catalog.SIZE_MULTIPLE or height % catalog.SIZE_MULTIPLE:
        errors.append(
            FieldError("size", "size_multiple_of_16", f"Both sides must be multiples of 16; got {width}x{height}.")
        )
    if max(width, height) > catalog.MAX_EDGE:
        errors.append(
            FieldError("size", "size_max_edge", f"The longer side must be at most {catalog.MAX_EDGE} pixels.")
        )
    if width and height and max(width, height) > catalog.MAX_ASPECT * min(width, height):
        errors.append(FieldError("size", "size_aspect_ratio", "The aspect ratio must be between 1:3 and 3:1."))
    pixels = width * height
    if pixels > catalog.MAX_PIXELS:
        errors.append(FieldError("size", "size_max_pixels", "The image may have at most 3840x2160 pixels in total."))
    elif pixels < catalog.MIN_PIXELS:
        errors.append(
            FieldError("size", "size_min_pixels", f"The image needs at least {catalog.MIN_PIXELS} pixels in total.")
        )
    return errors


def _quality_errors(quality: str, spec: catalog.ModelSpec) -> list[FieldError]:
    if quality in spec.qualities:
        return []
    allowed = ", ".join(spec.qualities)
    if quality in catalog.RETIRED_QUALITIES:
        return [
            FieldError("quality", "quality_retired", f"'{quality}' was a DALL-E quality; {spec.name} takes {allowed}.")
        ]
    return [FieldError("quality", "quality_not_supported", f"{spec.name} takes quality {allowed}.")]


def _format_errors(request: GenerationRequest) -> list[FieldError]:
    """Rules of the output format alone, whatever the model."""
    fmt = request.output_format
    if fmt not in catalog.OUTPUT_FORMATS:
        return [
            FieldError(
                "output_format",
                "output_format_not_supported",
                f"output_format must be one of {', '.join(catalog.OUTPUT_FORMATS)}.",
            )
        ]
    errors = []
    if request.background == "transparent" and fmt == "jpeg":
        errors.append(
            FieldError("background", "transparent_needs_png_or_webp", "A transparent background needs png or webp.")
        )
    if request.output_compression is not None and fmt == "png":
        errors.append(
            FieldError(
                "output_compression",
                "compression_needs_jpeg_or_webp",
                "output_compression applies only to jpeg and webp output.",
            )
        )
    return errors


def _background_errors(request: GenerationRequest, spec: catalog.ModelSpec) -> list[FieldError]:
    if request.background == "transparent" and not spec.transparent_background:
        return [
            FieldError(
                "background", "transparent_not_supported", f"{spec.name} does not offer transparent backgrounds yet."
            )
        ]
    return []


def _legacy_parameter_errors(request: GenerationRequest) -> list[FieldError]:
    errors = []
    for name in ("response_format", "style"):
        if getattr(request, name) is not None:
            errors.append(
                FieldError(
                    name, "legacy_parameter", f"{name} belongs to DALL-E; GPT image models always return base64."
                )
            )
    if request.stream:
        errors.append(
            FieldError(
                "stream",
                "stream_not_supported",
                "darkroom runs jobs asynchronously: ask for partial_images (1-3) to see previews on "
                "GET /v1/jobs/{id} while the job renders, and poll the job or use a webhook.",
            )
        )
    return errors


def _preview_errors(request: GenerationRequest) -> list[FieldError]:
    errors = []
    if request.partial_images and request.tier == "batch":
        errors.append(
            FieldError(
                "partial_images",
                "partial_images_not_batched",
                "A batch job's image comes whole with its batch's results: previews need the standard tier.",
            )
        )
    if request.webhook_events and "job.progress" in request.webhook_events and not request.partial_images:
        errors.append(
            FieldError(
                "webhook_events",
                "progress_needs_partial_images",
                "job.progress announces previews: ask for partial_images too, or leave job.progress out.",
            )
        )
    if request.partial_images and request.n != 1:
        errors.append(
            FieldError(
                "partial_images",
                "partial_images_needs_n_1",
                "Previews come for one image at a time: send n=1, or leave partial_images out.",
            )
        )
    return errors


def _cache_errors(request: GenerationRequest) -> list[FieldError]:
    if not request.cache:
        if request.cache_variations:
            return [FieldError("cache_variations", "cache_variations_needs_cache", "Send cache: true with it.")]
        return []
    if request.tier == "batch":
        return [FieldError("cache", "cache_not_batched", "A batch job is always generated: leave cache out.")]
    if request.n > 1 and not request.cache_variations:
        message = "n>1 asks for images that differ: send cache_variations: true to reuse another job's n, or n=1."
        return [FieldError("cache", "cache_variations_required", message)]
    return []


def _webhook_errors(url: str | None, *, allow_http: bool, allow_private: bool) -> list[FieldError]:
    if url is None:
        return []
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return [FieldError("webhook_url", "webhook_url_invalid", "webhook_url is not a valid URL.")]
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        return [FieldError("webhook_url", "webhook_url_https", "webhook_url must be an absolute https:// URL.")]
    if parts.username or parts.password:
        return [FieldError("webhook_url", "webhook_url_credentials", "webhook_url must not carry credentials.")]
    # The SSRF guard: a host written as a number, or resolving to any non-public address, is never sent to.
    from darkroom.addresses import url_problem  # only requests with a webhook_url pay for the guard's import

    problem = url_problem(url, allow_http=allow_http, allow_private=allow_private)
    if problem:
        return [
            FieldError("webhook_url", "webhook_url_not_allowed", f"darkroom will not send to webhook_url: {problem}.")
        ]
    return []
