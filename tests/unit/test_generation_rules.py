"""The validation table: what each model accepts, and how every refusal names its field and rule."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from darkroom import catalog
from darkroom.errors import ValidationFailed
from darkroom.models import GenerationRequest, parse_generation_request


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook hosts resolve (the SSRF guard looks them up) to a public address, with no network."""
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith("example.com"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port or 443))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def rules_broken(body: dict[str, Any], **kwargs: Any) -> set[tuple[str, str]]:
    try:
        parse_generation_request(body, **kwargs)
    except ValidationFailed as exc:
        return {(e.field, e.rule) for e in exc.errors}
    return set()


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "a cat"},
        {"prompt": "a cat", "model": "gpt-image-2", "size": "1536x1024", "output_format": "webp"},
        {"prompt": "a cat", "model": "gpt-image-2", "size": "3840x2160", "quality": "high"},
        {"prompt": "a cat", "model": "gpt-image-2", "size": "2160x3840"},
        {"prompt": "a cat", "model": "gpt-image-2", "size": "2400x800"},  # exactly 3:1
        {"prompt": "a cat", "model": "gpt-image-2-2026-04-21", "size": "1024x1024"},
        {"prompt": "a cat", "model": "gpt-image-2.5-flare", "quality": "max", "size": "2048x1152"},
        {"prompt": "a cat", "model": "gpt-image-2.6-sunburst", "quality": "xhigh"},
        {"prompt": "a cat", "model": "gpt-image-1.5", "background": "transparent", "output_format": "png"},
        {"prompt": "a cat", "model": "gpt-image-1-mini", "background": "transparent", "output_format": "webp"},
        {"prompt": "a cat", "model": "chatgpt-image-latest", "size": "1024x1536"},
        {"prompt": "a cat", "output_format": "jpeg", "output_compression": 0},
        {"prompt": "a cat", "output_format": "webp", "output_compression": 100},
        {"prompt": "a cat", "n": 10, "moderation": "low", "complexity": "high", "safety_identifier": "u-1"},
        {"prompt": "x" * 32_000},
        {"prompt": "a cat", "webhook_url": "https://hooks.example.com/darkroom", "metadata": {"k": "v"}},
    ],
)
def test_valid_requests_pass(body: dict[str, Any]) -> None:
    # Given a request every rule allows / When it is parsed / Then nothing is refused
    assert rules_broken(body) == set()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": "a cat", "size": "1000x1000"}, {("size", "size_multiple_of_16")}),
        ({"prompt": "a cat", "size": "4096x1024"}, {("size", "size_max_edge"), ("size", "size_aspect_ratio")}),
        ({"prompt": "a cat", "size": "3200x800"}, {("size", "size_aspect_ratio")}),
        ({"prompt": "a cat", "size": "3840x2400"}, {("size", "size_max_pixels")}),
        ({"prompt": "a cat", "size": "512x512"}, {("size", "size_min_pixels")}),
        ({"prompt": "a cat", "size": "big"}, {("size", "size_format")}),
        ({"prompt": "a cat", "size": "1536x1024\n"}, {("size", "size_format")}),
        ({"prompt": "a cat", "size": "01536x01024"}, {("size", "size_format")}),
        ({"prompt": "a cat", "size": "\u0661\u0660\u0662\u0664x1024"}, {("size", "size_format")}),
        ({"prompt": "   \n"}, {("prompt", "prompt_blank")}),
        ({"prompt": "a cat", "webhook_url": "https://[::1"}, {("webhook_url", "webhook_url_invalid")}),
        ({"prompt": "a cat", "webhook_url": "https://h.example.com:99999/"}, {("webhook_url", "webhook_url_invalid")}),
        (
            {"prompt": "a cat", "model": "dall-e-3", "output_format": "png", "output_compression": 5},
            {("model", "model_retired"), ("output_compression", "compression_needs_jpeg_or_webp")},
        ),
        ({"prompt": "a cat", "model": "gpt-image-1.5", "size": "2048x1152"}, {("size", "size_not_supported")}),
        ({"prompt": "a cat", "n": 11}, {("n", "less_than_equal")}),
        ({"prompt": "a cat", "n": 0}, {("n", "greater_than_equal")}),
        ({"prompt": "a cat", "n": "2"}, {("n", "int_type")}),
        ({"prompt": "x" * 32_001}, {("prompt", "string_too_long")}),
        ({"prompt": ""}, {("prompt", "string_too_short")}),
        ({}, {("prompt", "missing")}),
        ({"prompt": "a cat", "model": "dall-e-3"}, {("model", "model_retired")}),
        ({"prompt": "a cat", "model": "gpt-image-1"}, {("model", "model_retired")}),
        ({"prompt": "a cat", "model": "dall-e-2"}, {("model", "model_retired")}),
        ({"prompt": "a cat", "model": "imagen-9"}, {("model", "model_unknown")}),
        ({"prompt": "a cat", "quality": "hd"}, {("quality", "quality_retired")}),
        ({"prompt": "a cat", "quality": "max"}, {("quality", "quality_not_supported")}),
        ({"prompt": "a cat", "output_format": "gif"}, {("output_format", "output_format_not_supported")}),
        (
            {"prompt": "a cat", "model": "gpt-image-1.5", "background": "transparent", "output_format": "jpeg"},
            {("background", "transparent_needs_png_or_webp")},
        ),
        ({"prompt": "a cat", "background": "transparent"}, {("background", "transparent_not_supported")}),
        ({"prompt": "a cat", "output_compression": 50}, {("output_compression", "compression_needs_jpeg_or_webp")}),
        (
            {"prompt": "a cat", "output_format": "jpeg", "output_compression": 101},
            {("output_compression", "less_than_equal")},
        ),
        ({"prompt": "a cat", "background": "clear"}, {("background", "literal_error")}),
        ({"prompt": "a cat", "response_format": "url"}, {("response_format", "legacy_parameter")}),
        ({"prompt": "a cat", "style": "vivid"}, {("style", "legacy_parameter")}),
        ({"prompt": "a cat", "stream": True}, {("stream", "stream_not_supported")}),
        ({"prompt": "a cat", "partial_images": 4}, {("partial_images", "less_than_equal")}),
        ({"prompt": "a cat", "partial_images": -1}, {("partial_images", "greater_than_equal")}),
        ({"prompt": "a cat", "partial_images": "2"}, {("partial_images", "int_type")}),
        ({"prompt": "a cat", "partial_images": 2, "n": 2}, {("partial_images", "partial_images_needs_n_1")}),
        (
            {"prompt": "a cat", "webhook_events": ["job.progress"]},
            {("webhook_events", "progress_needs_partial_images")},
        ),
        ({"prompt": "a cat", "seed": 4}, {("seed", "extra_forbidden")}),
        ({"prompt": "a cat", "webhook_url": "http://hooks.example.com/x"}, {("webhook_url", "webhook_url_https")}),
        (
            {"prompt": "a cat", "webhook_url": "https://u:p@hooks.example.com"},
            {("webhook_url", "webhook_url_credentials")},
        ),
        ({"prompt": "a cat", "metadata": {f"k{i}": "v" for i in range(17)}}, {("metadata", "too_long")}),
        ({"prompt": "a cat", "metadata": {"k": "v" * 513}}, {("metadata.k", "string_too_long")}),
    ],
)
def test_each_broken_rule_is_named(body: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    # Given a request that breaks a rule / When it is parsed / Then exactly that field and rule are reported
    assert rules_broken(body) == expected


def test_several_broken_rules_are_reported_together() -> None:
    # Given a request with three problems in different fields
    body = {"prompt": "a cat", "size": "1000x1000", "n": 11, "model": "gpt-image-2"}
    # When it is parsed / Then the type errors and the model rules of the other fields come back together
    assert rules_broken(body) == {("n", "less_than_equal"), ("size", "size_multiple_of_16")}
    # And a request whose fields are well-typed reports every model rule at once
    body = {"prompt": "a cat", "size": "1000x1000", "output_format": "png", "output_compression": 5}
    assert rules_broken(body) == {
        ("size", "size_multiple_of_16"),
        ("output_compression", "compression_needs_jpeg_or_webp"),
    }


def test_retired_model_message_names_its_replacement() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_generation_request({"prompt": "a cat", "model": "dall-e-3"})
    assert "gpt-image-2" in caught.value.errors[0].message
    assert caught.value.errors[0].as_dict() == {
        "field": "model",
        "rule": "model_retired",
        "message": "'dall-e-3' was retired on 2026-05-12; use 'gpt-image-2' instead.",
    }


def test_http_and_private_webhooks_are_allowed_only_when_configured() -> None:
    body = {"prompt": "a cat", "webhook_url": "http://127.0.0.1:9000/hook"}
    assert rules_broken(body, allow_http_webhooks=True, allow_private_webhooks=True) == set()  # the local stack
    assert rules_broken(body, allow_http_webhooks=True) == {("webhook_url", "webhook_url_not_allowed")}
    assert rules_broken(body) == {("webhook_url", "webhook_url_https")}


def test_provider_params_carry_only_what_the_provider_understands() -> None:
    request = GenerationRequest.model_validate(
        {"prompt": "a cat", "user": "u-9", "webhook_url": "https://h.example.com", "metadata": {"a": "b"}}
    )
    assert request.provider_params() == {
        "prompt": "a cat",
        "model": "gpt-image-2",
        "n": 1,
        "size": "auto",
        "quality": "auto",
        "background": "auto",
        "output_format": "png",
        "moderation": "auto",
        "safety_identifier": "u-9",
    }


def test_every_model_has_prices_and_qualities() -> None:
    for spec in catalog.MODELS.values():
        assert "auto" in spec.qualities
        assert spec.prices.image_output > 0
    assert not set(catalog.RETIRED_MODELS) & set(catalog.MODELS)
    for _, replacement in catalog.RETIRED_MODELS.values():
        assert replacement in catalog.MODELS


def test_type_errors_and_model_rules_never_report_one_field_twice() -> None:
    body = {"size": 7, "model": "dall-e-3", "output_format": "png", "output_compression": 5, "quality": "hd"}
    assert rules_broken(body) == {
        ("prompt", "missing"),
        ("size", "string_type"),
        ("model", "model_retired"),
        ("output_compression", "compression_needs_jpeg_or_webp"),
    }


@pytest.mark.parametrize(
    ("events", "rule"),
    [(["job.failed"] * 40_000, "too_long"), (["job.failed", "job.failed"], "events_repeated"), ([], "too_short")],
    ids=["forty-thousand", "repeated", "empty"],
)
def test_webhook_events_list_each_event_at_most_once(events: list[str], rule: str) -> None:
    # A long list would make a job item DynamoDB refuses: a 5xx for a client's mistake, and no retry helps.
    with pytest.raises(ValidationFailed) as refused:
        parse_generation_request({"prompt": "p", "webhook_events": events})
    assert [(e.field, e.rule) for e in refused.value.errors] == [("webhook_events", rule)]


def test_partial_images_are_sent_to_the_provider_and_none_is_no_previews() -> None:
    request = parse_generation_request({"prompt": "a cat", "partial_images": 2})
    assert request.provider_params()["partial_images"] == 2
    for none in (0, None):
        body = {"prompt": "a cat", "partial_images": none} if none is not None else {"prompt": "a cat"}
        assert "partial_images" not in parse_generation_request(body).provider_params()


def test_stream_is_refused_with_a_pointer_to_previews() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_generation_request({"prompt": "a cat", "stream": True})
    assert "partial_images" in caught.value.errors[0].message
