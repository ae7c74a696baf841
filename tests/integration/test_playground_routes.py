"""What the playground stands on: the page itself, served by the api function with a strict policy, and the model
table it builds its form from."""

from __future__ import annotations

import re

from darkroom import catalog
from darkroom_local.stack import LocalStack
from tests.pipeline import call_api
from tests.support import http_event


def test_the_page_needs_no_key_and_allows_only_its_own_script(stack: LocalStack) -> None:
    answer = stack.functions["ApiFunction"].invoke(http_event("GET", "/"))
    assert answer["statusCode"] == 200
    headers = answer["headers"]
    assert headers["content-type"] == "text/html; charset=utf-8" and headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}';", policy), policy
    assert "unsafe-inline" not in policy and "<title>darkroom playground</title>" in answer["body"]
    # Nothing the API says is written into the page as HTML
    assert "innerHTML" not in answer["body"] and "insertAdjacentHTML" not in answer["body"]


def test_the_model_table_needs_a_key_and_says_what_each_model_takes(stack: LocalStack) -> None:
    status, _ = call_api(stack, http_event("GET", "/v1/models"))
    assert status == 401
    status, listed = call_api(stack, http_event("GET", "/v1/models", api_key=stack.api_keys["dev"]))
    assert status == 200 and listed["object"] == "list"
    models = {model["id"]: model for model in listed["data"]}
    assert set(models) == set(catalog.MODELS) and models[catalog.DEFAULT_MODEL]["default"] is True
    assert models["gpt-image-2"]["custom_sizes"]["multiple_of"] == 16
    assert "transparent" not in models["gpt-image-2"]["backgrounds"]
    assert models["gpt-image-1.5"]["custom_sizes"] is None and "transparent" in models["gpt-image-1.5"]["backgrounds"]
    assert models["gpt-image-2.5-flare"]["qualities"][-1] == "max" and models["gpt-image-2.5-flare"]["edits"]["markup"]
