"""The API router: routing, authentication order, and one mapping from errors to HTTP answers."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from darkroom.api.http import Request, Response, Router
from darkroom.errors import Conflict, Unauthorized
from tests.support import http_event, response_json


def make_router() -> Router:
    def authenticate(request: Request) -> str:
        if request.headers.get("authorization") != "Bearer good":
            raise Unauthorized("no")
        return "acme"

    router = Router(authenticate)

    @router.route("GET", "/open", summary="", public=True)
    def open_route(request: Request) -> Response:
        return Response(200, {"tenant": request.tenant})

    @router.route("GET", "/things/{id}", summary="")
    def thing(request: Request) -> Response:
        return Response(200, {"id": request.path_params["id"], "tenant": request.tenant})

    @router.route("POST", "/things/{id}", summary="")
    def conflict(request: Request) -> Response:
        raise Conflict("busy", code="thing_busy")

    @router.route("GET", "/boom", summary="", public=True)
    def boom(request: Request) -> Response:
        raise RuntimeError("secret internals")

    @router.route("GET", "/echo", summary="", public=True)
    def echo(request: Request) -> Response:
        return Response(422, {"error": {"message": "Unknown model '\ud800'."}})

    @router.route("GET", "/aws/{code}", summary="", public=True)
    def aws_error(request: Request) -> Response:
        code = request.path_params["code"]
        raise ClientError({"Error": {"Code": code, "Message": "Item size exceeded; key sk-1234"}}, "PutItem")

    return router


def test_public_route_needs_no_key() -> None:
    response = make_router().resolve(http_event("GET", "/open"))
    assert response["statusCode"] == 200 and response_json(response) == {"tenant": ""}


def test_private_route_gets_path_params_and_tenant() -> None:
    response = make_router().resolve(http_event("GET", "/things/42", api_key="good"))
    assert response_json(response) == {"id": "42", "tenant": "acme"}


def test_private_route_without_key_is_401() -> None:
    response = make_router().resolve(http_event("GET", "/things/42"))
    assert response["statusCode"] == 401
    assert response_json(response)["error"]["code"] == "unauthorized"


def test_domain_error_maps_to_its_status_and_code() -> None:
    response = make_router().resolve(http_event("POST", "/things/42", api_key="good", body={}))
    assert response["statusCode"] == 409
    assert response_json(response) == {
        "error": {"code": "thing_busy", "message": "busy", "type": "invalid_request_error", "param": None}
    }


def test_unknown_route_is_404_and_wrong_method_405() -> None:
    assert make_router().resolve(http_event("GET", "/nowhere"))["statusCode"] == 404
    response = make_router().resolve(http_event("DELETE", "/things/1", api_key="good"))
    assert response["statusCode"] == 405 and response["headers"]["allow"] == "GET, POST"
    error = response_json(response)["error"]
    assert error["code"] == "method_not_allowed" and error["type"] == "invalid_request_error" and "param" in error


def test_unexpected_error_is_500_without_details() -> None:
    response = make_router().resolve(http_event("GET", "/boom"))
    assert response["statusCode"] == 500
    assert "secret" not in response["body"]
    error = response_json(response)["error"]
    assert error["code"] == "internal_error" and error["type"] == "server_error" and error["param"] is None


def test_links_use_the_domain_api_gateway_answered_on_not_the_host_header() -> None:
    event = http_event("GET", "/open", headers={"host": "evil.example"})
    event["requestContext"]["domainName"] = "images.example.com"
    assert Request.from_event(event).base_url == "https://images.example.com"
    del event["requestContext"]["domainName"]
    assert Request.from_event(event).base_url == "https://evil.example"  # only a test's event has no domain
    event["headers"]["host"] = "a@b"
    assert Request.from_event(event).base_url == ""


@pytest.mark.parametrize(("sent_s_ago", "elapsed_s"), [(4.0, 4.0), (-5.0, 0.0), (120.0, 0.0), (None, 0.0)])
def test_waits_count_from_when_api_gateway_received_the_request(sent_s_ago: float | None, elapsed_s: float) -> None:
    # A cold start before the handler runs counts against API Gateway's 30 seconds; a clock that disagrees does not
    event = http_event("GET", "/open")
    event["requestContext"]["timeEpoch"] = None if sent_s_ago is None else int((time.time() - sent_s_ago) * 1000)
    assert Request.from_event(event).elapsed_s() == pytest.approx(elapsed_s, abs=0.1)


def test_json_body_rules() -> None:
    def request(body: bytes, content_type: str = "application/json") -> Request:
        return Request("POST", "/", {"content-type": content_type}, {}, body, "r")

    assert request(b'{"a": 1}').json() == {"a": 1}
    for bad in (request(b"{nope"), request(b""), request(b"{}", "text/plain")):
        try:
            bad.json()
        except Exception as exc:
            assert type(exc).__name__ == "InvalidRequest"
        else:
            raise AssertionError("expected InvalidRequest")


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [("ProvisionedThroughputExceededException", 503, "1"), ("ValidationException", 500, None)],
)
def test_aws_failures_are_503_to_retry_but_an_invalid_request_is_never_retryable(
    code: str, status: int, retry_after: str | None
) -> None:
    response = make_router().resolve(http_event("GET", f"/aws/{code}"))
    assert response["statusCode"] == status and response["headers"].get("retry-after") == retry_after
    assert "sk-1234" not in response["body"] and code not in response["body"]


def test_an_undecodable_body_is_400() -> None:
    event = {**http_event("GET", "/open"), "body": "%%%not base64", "isBase64Encoded": True}
    response = make_router().resolve(event)
    assert response["statusCode"] == 400 and response_json(response)["error"]["fields"][0]["rule"] == "body_encoding"


def test_an_answer_echoing_a_lone_surrogate_is_still_valid_utf8_json() -> None:
    # Given an answer quoting a client's text that holds a lone surrogate (it has no UTF-8 form)
    response = make_router().resolve(http_event("GET", "/echo"))
    # Then the body encodes, and reads back as the same text
    response["body"].encode()
    assert response_json(response)["error"]["message"] == "Unknown model '\ud800'."
