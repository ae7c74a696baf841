"""The OpenAPI document, generated from the router's routes and the pydantic models (built only when asked for)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from darkroom.api.http import Router
from darkroom.jobs.store import STATUSES
from darkroom.models import EditRequest, GenerationRequest, UploadFiles


class Output(BaseModel):
    key: str
    format: Literal["png", "webp", "jpeg"]
    width: int
    height: int
    bytes: int
    url: str | None = None


class InputFile(BaseModel):
    key: str
    format: Literal["png", "webp", "jpeg"]
    width: int
    height: int
    bytes: int


class EditInputs(BaseModel):
    images: list[InputFile]
    mask: InputFile | None = None
    markup: InputFile | None = None


class JobError(BaseModel):
    code: str
    message: str


class ProviderState(BaseModel):
    route: str = Field(description="The provider route running the job: openai, gateway, wavespeed.")
    job_id: str | None = Field(description="The asynchronous provider's own id for the job.")
    status: str | None = Field(
        description="What the asynchronous provider last said of the job (created, processing...)."
    )
    fallbacks: list[str] = Field(description="Routes the job may still move to, in order.")
    tried: list[dict[str, str]] = Field(description="Routes the job left, each with why.")


class Preview(BaseModel):
    index: int = Field(description="0 for the first preview; each later one is sharper.")
    format: str
    width: int
    height: int
    bytes: int
    key: str
    created_at: str
    url: str | None = Field(None, description="A presigned download link (in API answers).")


class Progress(BaseModel):
    partial_images: int = Field(description="The previews asked for.")
    previews: list[Preview] = Field(description="The previews stored so far, in order; shown while the job runs.")


class JobLinks(BaseModel):
    get: str
    cancel: str | None = Field(None, description="While the job has not ended.")
    deliveries: str | None = Field(None, description="Once the job has ended: its webhook deliveries.")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = Field(None, description="A presigned link, when base64 would not fit in one answer.")


class ImagesResponse(BaseModel):
    """OpenAI's own answer, for a submission sent with `Prefer: wait=N` whose job succeeded within N seconds."""

    created: int
    data: list[ImageData]
    usage: dict[str, Any] | None
    size: str | None
    quality: str
    output_format: str
    background: str


class AwsUse(BaseModel):
    usage: dict[str, int] = Field(
        description="Lambda MB-milliseconds and requests, DynamoDB units, Step Functions transitions, S3 bytes stored."
    )
    prices_as_of: str = Field(description="The date of the AWS price table aws_usd comes from (us-east-1, arm64).")


class JobCost(BaseModel):
    provider_usd: float | None = Field(description="From the provider's usage; null until the job is priced.")
    aws_usd: float = Field(description="What the job has used in AWS so far (Lambda, API Gateway, SQS, ...).")
    aws: AwsUse


class Job(BaseModel):
    id: str
    object: Literal["image.job"]
    kind: Literal["generate", "edit"]
    status: Literal["awaiting_upload", "queued", "running", "polling", "succeeded", "failed", "canceled"]
    model: str
    request: dict[str, Any]
    inputs: EditInputs | None = Field(description="An edit's input files, as darkroom stored them.")
    upload: dict[str, Any] | None = Field(
        description="An upload's expected files (images, mask, markup) and when it expires (expires_at, epoch s)."
    )
    outputs: list[Output]
    progress: Progress | None = Field(description="The previews of a job that asked for partial_images.")
    usage: dict[str, Any] | None
    cost_usd: float | None = Field(description="The provider's cost; the same as cost.provider_usd.")
    cost: JobCost
    error: JobError | None
    attempts: int
    provider: ProviderState
    cached_from: str | None = Field(description="The job whose images this cached job reused (cache: true).")
    webhook_url: str | None
    webhook_events: list[str] | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    next_attempt_at: str | None
    urls: JobLinks


class UploadRequest(EditRequest):
    """POST /v1/uploads: an edit's fields (its images are uploaded, not sent), and which files will come."""

    files: UploadFiles = Field(default_factory=UploadFiles)


class PresignedPost(BaseModel):
    field: str = Field(description="The file it takes: image[0]..image[n-1], mask or markup.")
    url: str
    fields: dict[str, str] = Field(description="Form fields to send first; then Content-Type (image/...), then file.")
    max_bytes: int


class UploadOpened(Job):
    uploads: list[PresignedPost]
    uploads_expire_in: int


class JobList(BaseModel):
    object: Literal["list"]
    data: list[Job]
    has_more: bool
    next_cursor: str | None


class FieldProblem(BaseModel):
    field: str
    rule: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    type: str = Field(description="OpenAI's error type: invalid_request_error, server_error...")
    param: str | None = Field(description="The first field the error names, as OpenAI's `param`.")
    fields: list[FieldProblem] | None = None
    job_id: str | None = Field(None, description="With `Prefer: wait`: the job that failed.")


class Error(BaseModel):
    error: ErrorBody


_REQUEST_BODIES = {
    ("POST", "/v1/images/generations"): GenerationRequest,
    ("POST", "/v1/images/edits"): EditRequest,
    ("POST", "/v1/uploads"): UploadRequest,
}
# An edit as the openai SDK sends it: the images as file parts, every other field as form text.
_EDIT_FORM = {
    "type": "object",
    "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": 16},
        "mask": {"type": "string", "format": "binary"},
        "markup": {"type": "string", "format": "binary"},
        "prompt": {"type": "string"},
    },
    "additionalProperties": {"type": "string"},
}
_RESPONSES: dict[tuple[str, str], tuple[str, type[BaseModel] | None]] = {
    ("POST", "/v1/images/generations"): ("202", Job),
    ("POST", "/v1/images/edits"): ("202", Job),
    ("POST", "/v1/uploads"): ("201", UploadOpened),
    ("GET", "/v1/jobs/{id}"): ("200", Job),
    ("GET", "/v1/jobs"): ("200", JobList),
    ("DELETE", "/v1/jobs/{id}"): ("200", Job),
}
_ERRORS = {
    "400": "unreadable request",
    "401": "missing or wrong API key",
    "404": "no such job for this tenant",
    "409": "the job's state forbids this",
    "422": "a field breaks a rule",
}
_WAITABLE = {("POST", "/v1/images/generations"), ("POST", "/v1/images/edits")}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "description": "wait=N (whole seconds, at most 25 used): answer as OpenAI does if the job ends within N s",
    "schema": {"type": "string", "examples": ["wait=25"]},
}
_QUERY = {
    ("GET", "/v1/jobs"): [
        {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(router: Router) -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    models: list[type[BaseModel]] = [
        GenerationRequest,
        EditRequest,
        UploadRequest,
        Job,
        UploadOpened,
        JobList,
        Error,
        ImagesResponse,
    ]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        key = (route.method, route.template)
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ("id",)
            if "{" + p + "}" in route.template
        ]
        params += _QUERY.get(key, [])
        if key in _WAITABLE:
            params.append(_PREFER)
        if params:
            operation["parameters"] = params
        if key in _REQUEST_BODIES:
            body: dict[str, Any] = {"application/json": {"schema": _ref(_REQUEST_BODIES[key])}}
            if _REQUEST_BODIES[key] is EditRequest:
                body["multipart/form-data"] = {"schema": _EDIT_FORM}
                operation["responses"]["413"] = {
                    "description": "body over 4 MB: upload large images through POST /v1/uploads",
                    "content": {"application/json": {"schema": _ref(Error)}},
                }
            operation["requestBody"] = {"required": True, "content": body}
        status, model = _RESPONSES.get(key, ("200", None))
        content = {"application/json": {"schema": _ref(model)}} if model else {"application/json": {}}
        operation["responses"][status] = {"description": "OK", "content": content}
        if key in _WAITABLE:
            operation["responses"]["200"] = {
                "description": "With Prefer: wait=N, the job succeeded within N s; a failure has OpenAI's status",
                "content": {"application/json": {"schema": _ref(ImagesResponse)}},
            }
        if not route.public:
            operation["security"] = [{"bearer": []}]
            for code, why in _ERRORS.items():
                operation["responses"][code] = {
                    "description": why,
                    "content": {"application/json": {"schema": _ref(Error)}},
                }
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "darkroom", "version": "1.0.0", "description": "Image generation jobs, OpenAI-shaped."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
