"""Cost comes from the provider's own usage block and the price table, to a millionth of a dollar."""

from decimal import Decimal

import pytest

from darkroom.pricing import cost_usd


def test_cost_splits_input_into_text_and_image_tokens() -> None:
    # Given an edit's usage: 100 text + 1000 image tokens in, 4000 image tokens out
    usage = {
        "input_tokens": 1100,
        "input_tokens_details": {"text_tokens": 100, "image_tokens": 1000},
        "output_tokens": 4000,
        "total_tokens": 5100,
    }
    # When it is priced for gpt-image-2 ($5 / $8 / $30 per million)
    # Then 100*5 + 1000*8 + 4000*30 = 128,500 millionths
    assert cost_usd("gpt-image-2", usage) == Decimal("0.128500")


def test_output_details_price_text_output_separately() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 1010,
        "output_tokens_details": {"image_tokens": 1000, "text_tokens": 10},
    }
    # No input details: all input is text. 10*5 + 1000*30 + 10*30
    assert cost_usd("gpt-image-2", usage) == Decimal("0.030350")


def test_medium_square_matches_the_published_estimate() -> None:
    # OpenAI's estimate for a medium 1024x1024 image is about $0.053
    usage = {"input_tokens": 0, "output_tokens": 1756}
    assert cost_usd("gpt-image-2", usage) == Decimal("0.052680")


def test_mini_has_its_own_prices_and_batch_halves() -> None:
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"text_tokens": 1000, "image_tokens": 0},
        "output_tokens": 1000,
    }
    assert cost_usd("gpt-image-1-mini", usage) == Decimal("0.010000")
    assert cost_usd("gpt-image-1-mini", usage, batch=True) == Decimal("0.005000")


def test_missing_or_malformed_usage_costs_nothing_rather_than_crashing() -> None:
    assert cost_usd("gpt-image-2", None) == Decimal(0)
    assert cost_usd("gpt-image-2", {"input_tokens": "lots", "output_tokens": -5}) == Decimal(0)
    assert cost_usd("gpt-image-2", {"output_tokens": True}) == Decimal(0)


def test_rounding_is_half_up_at_a_millionth() -> None:
    # 1 image output token = $0.00003; 1 text input token = $0.000005 -> rounds to 0.000005
    assert cost_usd("gpt-image-2", {"input_tokens": 1, "output_tokens": 0}) == Decimal("0.000005")
    # 0.1 text token equivalent cannot happen, but 1 mini image input token = $0.0000025 -> 0.000003
    usage = {"input_tokens": 1, "input_tokens_details": {"image_tokens": 1, "text_tokens": 0}, "output_tokens": 0}
    assert cost_usd("gpt-image-1-mini", usage) == Decimal("0.000003")


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "input_tokens_details": ["text", 10], "output_tokens": 100},
        {"input_tokens": 10, "input_tokens_details": "10", "output_tokens": 100},
        {"input_tokens": 10, "output_tokens": 100, "output_tokens_details": [100]},
        {"input_tokens": 10, "output_tokens": 100, "output_tokens_details": None},
        {"input_tokens": 10, "input_tokens_details": {}, "output_tokens": 100},
    ],
    ids=["details-list", "details-string", "output-details-list", "output-details-null", "details-empty"],
)
def test_usage_of_an_unexpected_shape_prices_what_it_can_and_never_raises(usage: dict[str, object]) -> None:
    # Given a billed answer whose details are not the documented maps / Then the plain token counts are priced
    assert cost_usd("gpt-image-2", usage) == Decimal("0.003050")  # 10 text in * $5 + 100 image out * $30


def test_usage_that_is_not_a_map_costs_nothing() -> None:
    assert cost_usd("gpt-image-2", ["usage"]) == Decimal(0)
