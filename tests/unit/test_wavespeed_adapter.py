"""The WaveSpeed adapter over httpx.MockTransport: what it sends, how each answer is classified, and what it fetches.

A submission is billed, so its failures are classified as the OpenAI adapter's are: only a failure that proves the
provider did not take the job may be tried again. Polls and downloads bill nothing: any failure of theirs is a
ProviderPollFailed, tried again later by the poller.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image

from darkroom.addresses import AddressRefused, public_addresses
from darkroom.errors import (
    ProviderAmbiguous,
    ProviderBadResponse,
    ProviderPollFailed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.providers import deadline
from darkroom.providers.wavespeed import WaveSpeedProvider, submission_body

REQUEST = {"prompt": "a cat", "model": "gpt-image-2", "n": 1, "size": "1536x1024", "quality": "low"}
PREDICTION = "0123456789abcdef0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, downloads: Handler | None = None) -> WaveSpeedProvider:
    return WaveSpeedProvider(
        "https://api.wavespeed.example/",
        lambda: "ws-test-secret-key",
        transport=httpx.MockTransport(handler),
        download_transport=httpx.MockTransport(downloads or handler),
    )


def envelope(data: object, code: int = 200, message: str = "success", status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "data": data})


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


def submit(handler: Handler) -> object:
    return provider(handler).submit("gpt-image-2", REQUEST, timeout_s=5, client_request_id="job_x:1")


def test_submission_is_sent_in_wavespeeds_fields_and_returns_the_prediction() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope({"id": PREDICTION, "status": "created", "urls": {"get": "..."}})

    submission = submit(handler)
    assert submission.prediction_id == PREDICTION and submission.status == "created"  # type: ignore[attr-defined]
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.wavespeed.example/api/v3/openai/gpt-image-2/text-to-image"
    assert request.headers["authorization"] == "Bearer ws-test-secret-key"
    assert json.loads(request.content) == {
        "prompt": "a cat",
        "size": "1536*1024",
        "quality": "low",
        "output_format": "png",
        "enable_sync_mode": False,
    }


def test_auto_values_are_left_to_wavespeeds_defaults() -> None:
    body = submission_body({"prompt": "a cat", "size": "auto", "quality": "auto", "output_format": "webp"})
    assert body == {"prompt": "a cat", "output_format": "webp", "enable_sync_mode": False}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda: envelope(None, code=429, message="slow down", status=429), ProviderRateLimited),
        (lambda: envelope(None, code=500, message="boom", status=500), ProviderUnavailable),
        # WaveSpeed can carry an error in a 200: its code is what counts.
        (lambda: envelope(None, code=500, message="boom"), ProviderUnavailable),
        (lambda: envelope(None, code=400, message="bad size"), ProviderRejected),
        (lambda: envelope(None, code=401, message="bad key ws-test-secret-key", status=401), ProviderRejected),
        # A gateway's 502/504 may hide a submission that went through: never repeated.
        (lambda: httpx.Response(502, text="<html>bad gateway</html>"), ProviderAmbiguous),
        (lambda: httpx.Response(504, text="timeout"), ProviderAmbiguous),
    ],
)
def test_submission_failures_are_classified_by_what_they_mean_for_billing(
    answer: Callable[[], httpx.Response], expected: type[Exception]
) -> None:
    with pytest.raises(expected) as caught:
        submit(lambda request: answer())
    assert "ws-test-secret-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("failure", "expected", "code"),
    [
        # No answer, or the connection lost after sending: WaveSpeed may have taken (and billed) the job.
        (httpx.ReadTimeout, ProviderAmbiguous, "provider_timeout"),
        (httpx.RemoteProtocolError, ProviderAmbiguous, "provider_disconnected"),
        # Never connected: nothing was sent, so it can be tried again.
        (httpx.ConnectError, ProviderUnavailable, "provider_unavailable"),
    ],
)
def test_a_submission_without_an_answer_is_classified_by_whether_it_was_sent(
    failure: type[httpx.TransportError], expected: type[Exception], code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure("no answer", request=request)

    with pytest.raises(expected) as caught:
        submit(handler)
    assert caught.value.code == code  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [
        lambda: envelope({"status": "created"}),  # accepted, but no id to follow it by
        lambda: envelope({"id": "../../etc", "status": "created"}),
        lambda: httpx.Response(200, text="not json"),
        lambda: httpx.Response(200, content=b"x" * 300_000),
    ],
)
def test_a_success_darkroom_cannot_follow_is_final_never_resubmitted(answer: Callable[[], httpx.Response]) -> None:
    with pytest.raises(ProviderBadResponse):
        submit(lambda request: answer())


def test_a_poll_reads_status_outputs_and_flags() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope(
            {
                "id": PREDICTION,
                "status": "completed",
                "outputs": ["https://cdn.example/0.png"],
                "has_nsfw_contents": [False],
                "timings": {"inference": 1234},
            }
        )

    prediction = provider(handler).poll(PREDICTION, timeout_s=5)
    assert prediction.ended and prediction.status == "completed"
    assert prediction.outputs == ("https://cdn.example/0.png",)
    assert not prediction.nsfw and prediction.inference_ms == 1234
    assert str(seen[0].url) == f"https://api.wavespeed.example/api/v3/predictions/{PREDICTION}/result"


def test_a_flagged_prediction_says_so() -> None:
    answer = envelope({"status": "completed", "outputs": [], "has_nsfw_contents": [False, True]})
    assert provider(lambda request: answer).poll(PREDICTION, timeout_s=5).nsfw


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: envelope(None, code=500, message="busy", status=500),
        lambda request: envelope(None, code=404, message="no such prediction", status=404),
        lambda request: envelope({"status": "exploded"}),
        lambda request: envelope({"status": "completed", "outputs": "https://cdn.example/0.png"}),
        lambda request: envelope(None),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
    ],
)
def test_every_poll_failure_is_one_to_try_again(answer: Handler) -> None:
    with pytest.raises(ProviderPollFailed):
        provider(answer).poll(PREDICTION, timeout_s=5)


def test_an_output_is_downloaded_whole() -> None:
    data = png()
    fetched = provider(lambda r: envelope(None), lambda r: httpx.Response(200, content=data)).download(
        "https://cdn.example/0.png", timeout_s=5
    )
    assert fetched == data


@pytest.mark.parametrize(
    "url",
    ["http://cdn.example/0.png", "file:///etc/passwd", "https://user:pw@cdn.example/0.png", "ftp://cdn.example/x"],
)
def test_output_links_must_be_plain_https(url: str) -> None:
    with pytest.raises(ProviderPollFailed):
        provider(lambda r: envelope(None), lambda r: httpx.Response(200, content=png())).download(url, timeout_s=5)


def test_a_redirecting_output_is_not_followed() -> None:
    answer = httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(ProviderPollFailed, match="302"):
        provider(lambda r: envelope(None), lambda r: answer).download("https://cdn.example/0.png", timeout_s=5)


def test_an_output_over_the_size_limit_is_refused() -> None:
    answer = httpx.Response(200, content=b"x" * 2048)
    with pytest.raises(ProviderBadResponse, match="larger"):
        provider(lambda r: envelope(None), lambda r: answer).download(
            "https://cdn.example/0.png", timeout_s=5, max_bytes=1024
        )


@pytest.fixture(scope="module")
def local_cdn() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving a PNG at any path: what an output link to a private address reaches."""
    data = png()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_the_local_stack_may_fetch_from_its_own_emulator(local_cdn: int) -> None:
    local = WaveSpeedProvider("http://127.0.0.1", lambda: "k", allow_private_urls=True)
    assert local.download(f"http://127.0.0.1:{local_cdn}/0.png", timeout_s=5) == png()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_outputs_are_never_fetched_from_private_addresses(local_cdn: int, host: str) -> None:
    # The same server, through the real download transport: the address check runs where the connection is made.
    guarded = WaveSpeedProvider("https://api.wavespeed.example", lambda: "k")
    with pytest.raises(ProviderPollFailed, match="could not reach"):
        guarded.download(f"https://{host}:{local_cdn}/0.png", timeout_s=5)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.1",
        "fd00::1",
        "::1",
        "::ffff:10.0.0.1",
        # IPv6 forms that embed a private IPv4 address, or are never public (found by review on Python 3.11)
        "64:ff9b::a9fe:a9fe",
        "::a9fe:a9fe",
        "::ffff:0:a9fe:a9fe",
        "64:ff9b:1::1",
        "fec0::1",
    ],
)
def test_the_address_guard_refuses_non_public_addresses(address: str) -> None:
    with pytest.raises(AddressRefused):
        public_addresses(address, 443)


def test_the_address_guard_lets_public_addresses_through() -> None:
    assert public_addresses("8.8.8.8", 443) == ["8.8.8.8"]
    assert public_addresses("64:ff9b::808:808", 443) == ["64:ff9b::808:808"]  # NAT64 to a public IPv4 address


def test_the_guarded_transport_refuses_a_private_address_that_answers(local_cdn: int) -> None:
    # Plain http, so nothing but the address check stands between the client and the server that would answer.
    url = f"http://127.0.0.1:{local_cdn}/0.png"
    with httpx.Client(transport=deadline.transport()) as open_client:
        assert open_client.get(url).status_code == 200
    with (
        httpx.Client(transport=deadline.transport(public_only=True)) as guarded,
        pytest.raises(httpx.ConnectError, match="non-public"),
    ):
        guarded.get(url)


@pytest.mark.parametrize(("status", "expected"), [(200, ProviderBadResponse), (500, ProviderUnavailable)])
def test_a_compressed_answer_is_never_inflated(status: int, expected: type[Exception]) -> None:
    # Stacked gzip inflates a kilobyte to gigabytes: the answer is judged by its status, its body never read
    class Unreadable(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            raise AssertionError("a compressed body was read")

    answer = httpx.Response(status, stream=Unreadable(), headers={"content-encoding": "gzip, gzip"})
    with pytest.raises(expected):
        submit(lambda request: answer)


def test_the_providers_error_text_never_carries_darkrooms_key() -> None:
    answer = envelope({"status": "failed", "error": "upstream refused Authorization: Bearer ws-test-secret-key"})
    prediction = provider(lambda request: answer).poll(PREDICTION, timeout_s=5)
    assert "ws-test-secret-key" not in prediction.error and "[redacted]" in prediction.error


def test_a_deleted_prediction_has_ended() -> None:
    assert provider(lambda request: envelope({"status": "deleted"})).poll(PREDICTION, timeout_s=5).ended
