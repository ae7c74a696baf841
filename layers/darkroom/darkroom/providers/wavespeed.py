"""WaveSpeedAI over httpx: submit a job, poll its prediction, download the outputs it links to.

Every answer is wrapped as `{"code", "message", "data"}`; `code` is authoritative (an HTTP 200 can carry an error).

- `submit` is billed: it raises darkroom.errors.Provider* classified exactly as the OpenAI adapter's calls are
  (providers/failures.py), so the worker's rules about what may be tried again hold for both: a submission that
  may have reached WaveSpeed and lost its answer is never repeated blindly.
- `poll` and `download` bill nothing: any failure is a `ProviderPollFailed`, which the poller tolerates a few times
  in a row before it gives up on the job.
- Output URLs come from outside: they are fetched only from public addresses (darkroom.addresses), within a deadline
  and a size limit, never following redirects.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from darkroom.errors import ProviderBadResponse, ProviderError, ProviderPollFailed
from darkroom.providers import deadline
from darkroom.providers.failures import classify, redact, transport_failures
from darkroom.providers.images_response import MAX_IMAGE_BYTES

ENVELOPE_LIMIT = 256 * 1024  # a submit or poll answer is a few hundred bytes; anything near this is not WaveSpeed's
WAITING = ("created", "processing")
ENDED = ("completed", "failed", "cancelled", "canceled", "timeout", "deleted")
_STATUS = re.compile(r"[a-z_]{1,32}")
_PREDICTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Submission:
    prediction_id: str
    status: str


@dataclass(frozen=True)
class Prediction:
    status: str
    outputs: tuple[str, ...] = ()
    error: str = ""
    nsfw: bool = False
    inference_ms: int | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def submission_body(request: dict[str, Any]) -> dict[str, Any]:
    """darkroom's (OpenAI-shaped) request in WaveSpeed's fields; `auto` values are left to WaveSpeed's defaults.
    Fields WaveSpeed cannot honour never get here: the API refuses them for this route (darkroom.routing)."""
    body: dict[str, Any] = {"prompt": request["prompt"], "enable_sync_mode": False}
    size = request.get("size", "auto")
    if size != "auto":
        body["size"] = str(size).replace("x", "*")
    if request.get("quality", "auto") != "auto":
        body["quality"] = request["quality"]
    body["output_format"] = request.get("output_format", "png")
    return body


class WaveSpeedProvider:
    asynchronous = True

    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        allow_private_urls: bool = False,
        transport: httpx.BaseTransport | None = None,
        download_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._allow_private_urls = allow_private_urls
        self._transports = (transport, download_transport)
        self._clients: tuple[httpx.Client, httpx.Client] | None = None
        self._lock = threading.Lock()

    def _http(self) -> tuple[httpx.Client, httpx.Client]:
        """(API client, download client): the second connects only to public addresses unless told otherwise."""
        with self._lock:
            if self._clients is None:
                api, downloads = self._transports
                self._clients = (
                    deadline.client(api),
                    deadline.client(downloads, public_only=not self._allow_private_urls),
                )
            return self._clients

    def prepare(self) -> None:
        self._api_key()
        self._http()

    # Submit: billed.

    def submit(
        self,
        model: str,
        request: dict[str, Any],
        *,
        timeout_s: float,
        client_request_id: str,
        image_urls: list[str] | None = None,
    ) -> Submission:
        """A generation, or with `image_urls` an edit of the images they link to (WaveSpeed fetches them)."""
        api_key = self._api_key()
        body = submission_body(request)
        if image_urls:
            body["images"] = image_urls
        task = "edit" if image_urls else "text-to-image"
        url = f"{self.base_url}/api/v3/openai/{quote(model, safe='')}/{task}"
        data = self._call("POST", url, api_key, timeout_s, client_request_id, json_body=body)
        prediction_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(prediction_id, str) or not _PREDICTION_ID.fullmatch(prediction_id):
            # WaveSpeed said success: it may have taken (and billed) the job, which darkroom now cannot follow.
            raise ProviderBadResponse("the provider accepted the job without an id darkroom can follow")
        return Submission(prediction_id, _status(data.get("status")) or "created")

    # Poll and download: free, and any failure is worth another try later.

    def poll(self, prediction_id: str, *, timeout_s: float) -> Prediction:
        api_key = self._api_key()
        url = f"{self.base_url}/api/v3/predictions/{quote(prediction_id, safe='')}/result"
        try:
            data = self._call("GET", url, api_key, timeout_s, prediction_id)
        except ProviderError as exc:
            raise ProviderPollFailed(f"polling the provider failed: {exc.message}") from None
        return _prediction(data, secrets=(api_key,))

    def download(self, url: str, *, timeout_s: float, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        parts = urlsplit(url)
        schemes = ("https", "http") if self._allow_private_urls else ("https",)
        if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
            raise ProviderPollFailed("the provider linked an output with a URL darkroom does not fetch")
        ends_at = time.monotonic() + timeout_s
        try:
            with (
                transport_failures(timeout_s),
                deadline.within(timeout_s),
                self._http()[1].stream("GET", url, timeout=httpx.Timeout(timeout_s, connect=10.0)) as response,
            ):
                if response.status_code != 200:
                    raise ProviderPollFailed(f"an output download answered {response.status_code}")
                if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
                    raise ProviderPollFailed("an output arrived in an encoding darkroom did not ask for")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise ProviderBadResponse(f"an output is larger than {max_bytes // (1024 * 1024)} MiB")
                    if time.monotonic() > ends_at:
                        raise ProviderPollFailed(f"an output download took longer than {timeout_s:.0f} s")
                return bytes(data)
        except (ProviderPollFailed, ProviderBadResponse):
            raise
        except ProviderError as exc:
            raise ProviderPollFailed(f"an output download failed: {exc.message}") from None

    def _call(
        self,
        method: str,
        url: str,
        api_key: str,
        timeout_s: float,
        client_request_id: str,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        """One API call; the envelope's `data` when its code is 200, else the failure it amounts to."""
        headers = {"Authorization": f"Bearer {api_key}", "X-Client-Request-Id": client_request_id}
        sent = time.monotonic()
        with (
            transport_failures(timeout_s) as progress,
            deadline.within(timeout_s),
            self._http()[0].stream(
                method, url, json=json_body, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0)
            ) as response,
        ):
            progress.answered = True
            # An encoded answer is not read at all: httpx would inflate it whole, past any limit (a gzip bomb of 1 KB
            # makes gigabytes). An error is still judged by its status.
            encoded = response.headers.get("content-encoding", "identity").strip().lower() != "identity"
            body = bytearray()
            for chunk in () if encoded else response.iter_bytes():
                body += chunk
                if len(body) > ENVELOPE_LIMIT:
                    break
            elapsed_s = time.monotonic() - sent
        code, message, data = _envelope(bytes(body), response.status_code, secrets=(api_key,))
        if 200 <= response.status_code < 300:
            if code == 200 and not encoded and len(body) <= ENVELOPE_LIMIT:
                return data
            if code in (0, 200):
                raise ProviderBadResponse("the provider's answer could not be read")
            status = code  # an error carried in a 200 answer
        else:
            status = response.status_code
        raise classify(status, response.headers, "", message, elapsed_s=elapsed_s)


def _envelope(body: bytes, http_status: int, *, secrets: tuple[str, ...]) -> tuple[int, str, Any]:
    """(code, message, data) of an answer; a body that is no envelope keeps the HTTP status as its code."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return (http_status if http_status != 200 else 0), "", None
    if not isinstance(document, dict):
        return (http_status if http_status != 200 else 0), "", None
    code = document.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
        code = http_status if http_status != 200 else 0
    return code, redact(str(document.get("message") or ""), secrets), document.get("data")


def _status(value: Any) -> str:
    return value if isinstance(value, str) and _STATUS.fullmatch(value) else ""


def _prediction(data: Any, *, secrets: tuple[str, ...]) -> Prediction:
    if not isinstance(data, dict):
        raise ProviderPollFailed("the provider's poll answer carried no prediction")
    status = _status(data.get("status"))
    if status not in WAITING and status not in ENDED:
        raise ProviderPollFailed("the provider reported a status darkroom does not know")
    outputs = data.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(url, str) for url in outputs):
        raise ProviderPollFailed("the provider's outputs are not a list of links")
    nsfw = data.get("has_nsfw_contents") or False
    flagged = any(flag is True for flag in nsfw) if isinstance(nsfw, list) else nsfw is True
    timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
    inference = timings.get("inference") if timings else None
    return Prediction(
        status=status,
        outputs=tuple(outputs),
        error=redact(str(data.get("error") or ""), secrets)[:500],
        nsfw=flagged,
        inference_ms=inference if isinstance(inference, int) and not isinstance(inference, bool) else None,
    )
