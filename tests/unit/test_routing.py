"""Provider routes: the request's `provider`, else the model's configured chain, and what each route refuses."""

from __future__ import annotations

from typing import Any

import pytest

from darkroom import routing
from darkroom.errors import ValidationFailed
from darkroom.models import parse_generation_request

BOTH = "openai,wavespeed"
ALL = "openai,gateway,wavespeed"
WAVESPEED_DEFAULT = routing.RouteConfig.parse(BOTH, "gpt-image-2=wavespeed,*=openai")
ENABLED = routing.RouteConfig.parse(BOTH, "*=openai")


def rules_broken(body: dict[str, Any], routes: routing.RouteConfig = ENABLED) -> set[tuple[str, str]]:
    try:
        parse_generation_request({"prompt": "a cat", **body}, routes=routes)
    except ValidationFailed as exc:
        return {(e.field, e.rule) for e in exc.errors}
    return set()


def test_configuration_parses_model_and_wildcard_entries_and_skips_unknown_routes() -> None:
    config = routing.RouteConfig.parse(
        "wavespeed, nowhere", " gpt-image-2 = wavespeed | nowhere| openai|wavespeed , *=openai,x=nowhere,=openai"
    )
    assert config.chains == {"gpt-image-2": ("wavespeed", "openai"), "*": ("openai",)}
    assert config.enabled == {"openai", "wavespeed"}  # openai always


@pytest.mark.parametrize(
    ("defaults", "model", "route"),
    [
        ("*=openai", "gpt-image-2", "openai"),
        ("gpt-image-2=wavespeed,*=openai", "gpt-image-2", "wavespeed"),
        ("gpt-image-2=wavespeed,*=openai", "gpt-image-1.5", "openai"),
        # A wildcard to a route that does not serve the model is passed over for it.
        ("*=wavespeed", "gpt-image-2", "wavespeed"),
        ("*=wavespeed", "gpt-image-1-mini", "openai"),
        ("gpt-image-1.5=wavespeed", "gpt-image-1.5", "openai"),
    ],
)
def test_the_default_route_comes_from_configuration(defaults: str, model: str, route: str) -> None:
    assert routing.RouteConfig.parse(BOTH, defaults).chain(model)[0] == route


def test_a_disabled_route_is_never_a_default_and_never_chosen() -> None:
    openai_only = routing.RouteConfig.parse("openai", "gpt-image-2=wavespeed")
    assert openai_only.chain("gpt-image-2") == ("openai",)
    assert rules_broken({"provider": "wavespeed"}, openai_only) == {("provider", "provider_disabled")}


def test_a_request_may_name_its_provider_and_is_then_pinned_to_it() -> None:
    assert rules_broken({"provider": "wavespeed", "model": "gpt-image-2"}) == set()
    chained = routing.RouteConfig.parse(ALL, "*=wavespeed|gateway|openai")
    assert routing.routes_for({"model": "gpt-image-2"}, "openai", chained) == ("openai",)


def test_a_models_chain_keeps_its_order_and_leaves_out_what_is_off_or_cannot_serve() -> None:
    chained = routing.RouteConfig.parse("openai,wavespeed", "gpt-image-2=gateway|wavespeed|openai,*=wavespeed|openai")
    assert chained.chain("gpt-image-2") == ("wavespeed", "openai")  # gateway is off
    assert chained.chain("gpt-image-1.5") == ("openai",)  # WaveSpeed serves only gpt-image-2
    assert routing.RouteConfig.parse(ALL, "gpt-image-2=gateway").chain("gpt-image-2") == ("gateway",)


@pytest.mark.parametrize(
    ("fields", "routes"),
    [
        ({"model": "gpt-image-2"}, ("wavespeed", "gateway", "openai")),
        # WaveSpeed renders one image, and takes neither a mask nor a markup: the job starts on the gateway.
        ({"model": "gpt-image-2", "n": 2}, ("gateway", "openai")),
        ({"model": "gpt-image-2", "mask": True}, ("gateway", "openai")),
        # WaveSpeed answers only when the image is done: previews need an OpenAI-compatible route.
        ({"model": "gpt-image-2", "partial_images": 2}, ("gateway", "openai")),
    ],
)
def test_a_job_gets_the_routes_of_its_chain_that_can_honour_it(
    fields: dict[str, object], routes: tuple[str, ...]
) -> None:
    chained = routing.RouteConfig.parse(ALL, "*=wavespeed|gateway|openai")
    assert routing.routes_for(fields, None, chained) == routes


def test_a_request_no_route_of_its_chain_can_honour_is_refused_with_the_first_routes_reasons() -> None:
    only_wavespeed = routing.RouteConfig.parse(ALL, "gpt-image-2=wavespeed")
    assert rules_broken({"model": "gpt-image-2", "n": 2}, only_wavespeed) == {("n", "provider_not_supported")}
    # With a route after it that can, the request is accepted, for that route.
    assert rules_broken({"model": "gpt-image-2", "n": 2}, routing.RouteConfig.parse(ALL, "*=wavespeed|openai")) == set()


def test_an_unknown_provider_is_a_422_naming_provider() -> None:
    assert rules_broken({"provider": "midjourney"}) == {("provider", "provider_unknown")}


def test_a_model_the_provider_does_not_serve_is_a_422_naming_provider() -> None:
    assert rules_broken({"provider": "wavespeed", "model": "gpt-image-1.5"}) == {
        ("provider", "provider_model_not_served")
    }


def test_provider_must_be_a_string() -> None:
    assert rules_broken({"provider": 7}) == {("provider", "string_type")}


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 2), ("output_compression", 50), ("moderation", "low"), ("complexity", "high"), ("partial_images", 2)],
)
def test_what_wavespeed_cannot_honour_is_refused_by_name(field: str, value: Any) -> None:
    body = {"provider": "wavespeed", field: value}
    if field == "output_compression":
        body["output_format"] = "webp"
    assert rules_broken(body) == {(field, "provider_not_supported")}
    # The same request through a configured default is refused the same way.
    del body["provider"]
    assert rules_broken(body, WAVESPEED_DEFAULT) == {(field, "provider_not_supported")}


def test_route_rules_are_reported_with_every_other_broken_rule() -> None:
    assert rules_broken({"provider": "wavespeed", "n": 2, "size": "17x17"}) == {
        ("n", "provider_not_supported"),
        ("size", "size_multiple_of_16"),
        ("size", "size_min_pixels"),
    }


def test_no_previews_is_what_every_route_honours() -> None:
    assert rules_broken({"provider": "wavespeed", "partial_images": 0}) == set()
