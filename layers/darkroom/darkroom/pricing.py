"""Cost of a provider call, from the usage the provider reported (never from a per-image guess)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from darkroom import catalog

USD_PLACES = Decimal("0.000001")


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = usage.get(name)
    return value if isinstance(value, dict) and value else None


def cost_usd(model: str, usage: Any, *, batch: bool = False) -> Decimal:
    """USD for one call's `usage` block, rounded to a millionth of a dollar.

    Input tokens split into text and image by `input_tokens_details`; when it is missing all input counts as text.
    Output tokens without `output_tokens_details` are all image tokens, as GPT image models report them. A usage
    block of any other shape prices what it can read and never raises: it arrives after the provider has billed.
    """
    if not isinstance(usage, dict) or not usage:
        return Decimal(0)
    spec = catalog.MODELS.get(model)
    prices = spec.prices if spec else catalog.GPT_IMAGE_PRICES
    input_details = _details(usage, "input_tokens_details")
    if input_details:
        image_in, text_in = _tokens(input_details.get("image_tokens")), _tokens(input_details.get("text_tokens"))
    else:
        image_in, text_in = 0, _tokens(usage.get("input_tokens"))
    output_details = _details(usage, "output_tokens_details")
    if output_details:
        image_out = _tokens(output_details.get("image_tokens"))
        text_out = _tokens(output_details.get("text_tokens"))
    else:
        image_out, text_out = _tokens(usage.get("output_tokens")), 0
    total = (
        text_in * prices.text_input
        + image_in * prices.image_input
        + image_out * prices.image_output
        + text_out * prices.text_output
    ) / catalog.PER_MILLION
    if batch:
        total /= 2
    return total.quantize(USD_PLACES, rounding=ROUND_HALF_UP)
