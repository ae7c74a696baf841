"""The local API front at the HTTP level, over raw sockets: it answers as API Gateway's HTTP API does, whatever arrives.

API Gateway answers what it refuses itself with JSON (`{"message":"Not Found"}` and the like); it never hangs, never
drops a connection unanswered and never invokes the function for a request it refused.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from darkroom_local.front import PAYLOAD_LIMIT, ApiFront
from darkroom_local.template import FunctionSpec

READ_TIMEOUT_S = 5.0  # on every read: a front that hangs fails the test instead of hanging it
ROUTE_RESULT = {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": '{"ok":true}'}


@dataclass
class FakeFunction:
    """Stands in for a LocalFunction: routes like the api's, records what reaches it, answers `result`."""

    spec: FunctionSpec = field(
        default_factory=lambda: FunctionSpec(
            "ApiFunction",
            Path("."),
            "app.lambda_handler",
            3,
            {},
            http_routes=[("GET", "/openapi.json"), ("POST", "/v1/images/generations")],
        )
    )
    events: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None

    def invoke(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return self.result


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def function() -> FakeFunction:
    return FakeFunction()


@pytest.fixture(scope="module")
def front(function: FakeFunction) -> Iterator[ApiFront]:
    # A short read timeout, so the test of a client that stops mid-body waits one second, not thirty.
    front = ApiFront([function], read_timeout_s=1.0)
    front.start()
    yield front
    front.stop()


@pytest.fixture(autouse=True)
def fresh(function: FakeFunction) -> None:
    function.events.clear()
    function.result = dict(ROUTE_RESULT)


def connect(front: ApiFront) -> socket.socket:
    host, port = front.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S)


def read_answer(stream: io.BufferedReader, *, head: bool = False) -> Answer:
    status_line = stream.readline()
    assert status_line, "connection closed without an answer"
    version, status, _ = status_line.decode("latin-1").split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b"" if head else stream.read(int(headers["content-length"]))
    return Answer(int(status), headers, body)


def exchange(front: ApiFront, request: bytes) -> tuple[Answer, bytes]:
    """Send one request, read its answer, then whatever follows it until the front closes the connection."""
    with connect(front) as sock, sock.makefile("rb") as stream:
        sock.sendall(request)
        answer = read_answer(stream)
        return answer, stream.read()


def assert_gateway_answer(answer: Answer, status: int, message: str) -> None:
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.body)
    assert json.loads(answer.body) == {"message": message}


def post(headers: str, body: bytes = b"") -> bytes:
    return f"POST /v1/images/generations HTTP/1.1\r\nHost: local\r\n{headers}\r\n".encode() + body


MALFORMED = {
    "negative content-length": post("Content-Length: -1\r\n"),
    "non-numeric content-length": post("Content-Length: abc\r\n", b"abc"),
    "content-length python alone would read": post("Content-Length: 1_0\r\n", b"0123456789"),
    "two content-lengths that disagree": post("Content-Length: 2\r\nContent-Length: 3\r\n", b"abc"),
    "content-length beside chunked": post(
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"
    ),
    "a transfer coding it cannot decode": post("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "a chunk size that is not hex": post("Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
    "a chunk longer than its size": post("Transfer-Encoding: chunked\r\n", b"3\r\nabcd\r\n0\r\n\r\n"),
    "an HTTP/0.9 request": b"GET /openapi.json\r\n\r\n",
    "a request line that is not one": b"GARBAGE\r\n\r\n",
    "an HTTP/2.0 request line": b"GET /openapi.json HTTP/2.0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_answered_400_in_json_and_closed(
    front: ApiFront, function: FakeFunction, request_bytes: bytes
) -> None:
    # Given a request API Gateway could not read
    # When it reaches the front
    answer, after = exchange(front, request_bytes)
    # Then the answer is API Gateway's 400, the connection closes right after it, and the function never ran
    assert_gateway_answer(answer, 400, "Bad Request")
    assert answer.headers["connection"] == "close" and after == b""
    assert function.events == []


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "Request-URI Too Long"),
        (
            b"GET /openapi.json HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "Request Header Fields Too Large",
        ),
    ],
    ids=["request line", "header line"],
)
def test_what_the_http_server_refuses_itself_is_answered_in_json(
    front: ApiFront, request_bytes: bytes, status: int, message: str
) -> None:
    # Given a request too long for the HTTP server underneath the front
    # When it reaches the front
    answer, after = exchange(front, request_bytes)
    # Then the server's own refusal is JSON, not its HTML error page
    assert_gateway_answer(answer, status, message)
    assert after == b""


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "FROB"])
def test_method_without_a_route_is_answered_404_in_json(front: ApiFront, function: FakeFunction, method: str) -> None:
    # Given a path that has a route, asked with a method that has none
    # When the request reaches the front
    answer, _ = exchange(front, f"{method} /openapi.json HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n".encode())
    # Then API Gateway's 404, not the HTTP server's 501 page
    assert_gateway_answer(answer, 404, "Not Found")
    assert function.events == []


def test_head_is_answered_404_with_headers_only_and_the_connection_stays_usable(front: ApiFront) -> None:
    # Given one connection
    with connect(front) as sock, sock.makefile("rb") as stream:
        # When a HEAD request is answered, then a GET follows on the same connection
        sock.sendall(b"HEAD /openapi.json HTTP/1.1\r\nHost: local\r\n\r\n")
        head = read_answer(stream, head=True)
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: local\r\n\r\n")
        get = read_answer(stream)
    # Then HEAD got a 404 announcing its JSON's length without sending it, so the GET's answer is read intact
    assert head.status == 404 and head.headers["content-type"] == "application/json"
    assert int(head.headers["content-length"]) == len(b'{"message":"Not Found"}')
    assert (get.status, get.body) == (200, b'{"ok":true}')


def test_body_over_the_payload_limit_is_answered_413_without_invoking_the_function(
    front: ApiFront, function: FakeFunction
) -> None:
    # Given a client that sends a body one byte over API Gateway's limit before reading anything
    request = post(f"Content-Length: {PAYLOAD_LIMIT + 1}\r\n", b"x" * (PAYLOAD_LIMIT + 1))
    # When it reaches the front
    answer, after = exchange(front, request)
    # Then it is refused with 413 (the client could send it all: the front read and dropped it)
    assert_gateway_answer(answer, 413, "Request Entity Too Large")
    assert after == b"" and function.events == []


@pytest.mark.parametrize(
    ("headers", "first_bytes"),
    [
        ("Content-Length: 10737418240\r\n", b"xxxx"),
        ("Content-Length: 99999999999999999999999999999999\r\n", b"xxxx"),
        ("Content-Length: 10737418240\r\nExpect: 100-continue\r\n", b""),
        ("Transfer-Encoding: chunked\r\n", b"A00001\r\nxxxx"),  # a chunk of PAYLOAD_LIMIT + 1 bytes
    ],
    ids=["10 GB", "absurd length", "10 GB expecting 100-continue", "oversized chunk"],
)
def test_body_announced_over_the_limit_is_refused_before_it_is_sent(
    front: ApiFront, function: FakeFunction, headers: str, first_bytes: bytes
) -> None:
    # Given a client that announces a body over the limit and sends at most its first bytes
    with connect(front) as sock, sock.makefile("rb") as stream:
        sock.sendall(post(headers, first_bytes))
        # When it waits for an answer
        answer = read_answer(stream)
    # Then 413 arrives at once: the front neither waits for the body nor reads it into memory
    assert_gateway_answer(answer, 413, "Request Entity Too Large")
    assert function.events == []


def test_body_at_the_payload_limit_reaches_the_function(front: ApiFront, function: FakeFunction) -> None:
    # Given a body exactly at API Gateway's limit
    body = b"x" * PAYLOAD_LIMIT
    # When it is posted
    answer, _ = exchange(front, post(f"Content-Length: {PAYLOAD_LIMIT}\r\nConnection: close\r\n", body))
    # Then the function gets it whole
    assert answer.status == 200
    assert len(function.events) == 1 and function.events[0]["body"] == body.decode()


def test_chunked_body_reaches_the_function_decoded(front: ApiFront, function: FakeFunction) -> None:
    # Given a chunked body with a chunk extension and a trailer
    chunked = b"6;name=value\r\nhello \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n"
    # When it is posted
    answer, _ = exchange(front, post("Transfer-Encoding: chunked\r\nConnection: close\r\n", chunked))
    # Then the function gets the decoded body
    assert answer.status == 200
    assert [event["body"] for event in function.events] == ["hello world"]


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /openapi.json HTTP/1.1\r\nHost: local\r\n", post("Content-Length: 100\r\n", b"0123456789")],
    ids=["headers", "body"],
)
def test_request_cut_short_is_answered_400_once_the_client_stops_sending(
    front: ApiFront, function: FakeFunction, request_bytes: bytes
) -> None:
    # Given a client that stops sending in the middle of its request and waits
    with connect(front) as sock, sock.makefile("rb") as stream:
        sock.sendall(request_bytes)
        # When the front's read timeout passes
        answer = read_answer(stream)
    # Then it is answered 400 instead of being waited for forever, and the function never ran
    assert_gateway_answer(answer, 400, "Bad Request")
    assert function.events == []


@pytest.mark.parametrize("result", [{"statusCode": "teapot"}, {"statusCode": 200, "body": 7}], ids=["status", "body"])
def test_result_api_gateway_cannot_read_is_answered_500_in_json(
    front: ApiFront, function: FakeFunction, result: dict[str, Any]
) -> None:
    # Given a function that returns what API Gateway cannot turn into an answer
    function.result = result
    # When a request reaches it
    answer, _ = exchange(front, b"GET /openapi.json HTTP/1.1\r\nHost: local\r\n\r\n")
    # Then API Gateway's 500, not a dropped connection
    assert_gateway_answer(answer, 500, "Internal Server Error")
