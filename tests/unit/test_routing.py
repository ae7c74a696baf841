"""Provider routes: the request's `provider`, else the model's configured default, and what each route refuses."""

from __future__ import annotations

from typing import Any

import pytest

from darkroom import routing
from darkroom.errors import ValidationFailed
from darkroom.models import parse_generation_request

BOTH = "openai,wavespeed"
WAVESPEED_DEFAULT = routing.RouteConfig.parse(BOTH, "gpt-image-2=wavespeed,*=openai")
ENABLED = routing.RouteConfig.parse(BOTH, "*=openai")


def rules_broken(body: dict[str, Any], routes: routing.RouteConfig = ENABLED) -> set[tuple[str, str]]:
    try:
        parse_generation_request({"prompt": "a cat", **body}, routes=routes)
    except ValidationFailed as exc:
        return {(e.field, e.rule) for e in exc.errors}
    return set()


def test_configuration_parses_model_and_wildcard_entries_and_skips_unknown_routes() -> None:
    config = routing.RouteConfig.parse("wavespeed, nowhere", " gpt-image-2 = wavespeed , *=openai,x=nowhere,=openai")
    assert config.defaults == {"gpt-image-2": "wavespeed", "*": "openai"}
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
    assert routing.default_route(model, routing.RouteConfig.parse(BOTH, defaults)) == route


def test_a_disabled_route_is_never_a_default_and_never_chosen() -> None:
    openai_only = routing.RouteConfig.parse("openai", "gpt-image-2=wavespeed")
    assert routing.default_route("gpt-image-2", openai_only) == "openai"
    assert rules_broken({"provider": "wavespeed"}, openai_only) == {("provider", "provider_disabled")}


def test_a_request_may_name_its_provider() -> None:
    assert rules_broken({"provider": "wavespeed", "model": "gpt-image-2"}) == set()
    assert routing.route_for("gpt-image-2", "openai", WAVESPEED_DEFAULT) == "openai"


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
    [("n", 2), ("output_compression", 50), ("moderation", "low"), ("complexity", "high")],
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
