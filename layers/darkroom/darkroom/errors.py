"""Every error darkroom raises on purpose, each with the HTTP status and code a client sees.

The API maps these in one place (darkroom.api.routes); anything else becomes a 500 that says nothing about its cause.
Provider outcomes live here too so the worker's retry policy reads as a list of except clauses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One broken rule: which field, which rule (a stable code), and a sentence for people."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class DarkroomError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, object]:
        # OpenAI's error shape (message, type, param, code), which its SDK reads into its exceptions, and every
        # broken rule in `fields`.
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        param = self.errors[0].field if self.errors else None
        error: dict[str, object] = {"code": self.code, "message": self.message, "type": kind, "param": param}
        if self.errors:
            error["fields"] = [e.as_dict() for e in self.errors]
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(DarkroomError):
    """The request cannot be read at all (bad JSON, wrong content type, a cursor we never issued)."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message, [FieldError(field, rule, message)])


class ValidationFailed(DarkroomError):
    status = 422
    code = "validation_failed"

    def __init__(self, errors: list[FieldError]) -> None:
        fields = ", ".join(sorted({e.field for e in errors}))
        super().__init__(f"The request breaks {len(errors)} rule(s) on: {fields}.", errors)


class BodyTooLarge(DarkroomError):
    status = 413
    code = "body_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, [FieldError("body", "body_too_large", message)])


class Unauthorized(DarkroomError):
    status = 401
    code = "unauthorized"


class NotFound(DarkroomError):
    status = 404
    code = "not_found"


class Conflict(DarkroomError):
    status = 409
    code = "conflict"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class QuotaExceeded(DarkroomError):
    """A tenant's quota refuses the request for now: too many submissions this minute or jobs in flight (429, with
    when to try again)."""

    status = 429

    def __init__(self, message: str, *, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class BudgetExceeded(DarkroomError):
    """The job's worst-case cost does not fit what is left of the tenant's monthly budget."""

    status = 402
    code = "budget_exceeded"


class MethodNotAllowed(DarkroomError):
    status = 405
    code = "method_not_allowed"


class ServiceUnavailable(DarkroomError):
    """A dependency (DynamoDB, SQS, S3) failed; the client may retry. Its own error text stays in our logs."""

    status = 503
    code = "service_unavailable"


# Provider outcomes. The worker decides retries from the class alone.


class ProviderError(Exception):
    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ProviderRefused(ProviderError):
    """Content-policy refusal: final, never retried."""

    code = "moderation_blocked"


class ProviderRejected(ProviderError):
    """The provider will never accept this request (bad key, no access, unknown model, exhausted quota): final."""

    code = "provider_rejected"

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.code = code


class ProviderRateLimited(ProviderError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    """The request certainly did not generate: a connection or connect timeout that failed before the request was
    sent, or a quick 5xx/408/409 answer. Worth another try, a bounded number of times."""

    code = "provider_unavailable"


class ModerationUnavailable(ProviderUnavailable):
    """The moderation check before the image call could not be made. It bills nothing, so it is tried again like a
    call that certainly did not generate."""

    code = "moderation_unavailable"


class ProviderAmbiguous(ProviderError):
    """The request may have reached the provider and its answer was lost: a read timeout, a connection cut after
    sending, a 504 or a 5xx after a long wait, a body cut short. The provider may have generated, and billed, the
    images, so the call is never repeated unless the operator opted in (RetryAmbiguousProviderCalls)."""

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.code = code


class ProviderPollFailed(ProviderError):
    """Asking an asynchronous provider how a job is going failed (an error answer, no answer, an output that could
    not be fetched). Polling bills nothing, so the poller asks again, a few times in a row at most."""

    code = "provider_unavailable"


class ProviderBadResponse(ProviderError):
    """A 2xx whose body is not what the API promises. The call may have been billed, so it is not retried."""

    code = "provider_bad_response"
