"""What each image model accepts, and what it costs: the one table the API validates against.

Facts come from OpenAI's Images API as of November 2026. A request that breaks a rule here is refused before it
reaches a queue, so the provider never bills for a request it would have rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
BASE_QUALITIES = ("low", "medium", "high", "auto")
EXTENDED_QUALITIES = (*BASE_QUALITIES, "xhigh", "max")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
# Custom sizes (models with flexible_sizes): both sides multiples of 16, long side at most 3840, aspect within 3:1,
# total pixels between 1024x640 and 3840x2160.
SIZE_MULTIPLE = 16
MAX_EDGE = 3840
MAX_ASPECT = 3
MIN_PIXELS = 655_360
MAX_PIXELS = 3840 * 2160
# ASCII digits, no leading zeros, nothing around: what is accepted is exactly what the provider will be sent.
SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """USD per one million tokens."""

    text_input: Decimal
    image_input: Decimal
    image_output: Decimal
    # Text output tokens (planning) are billed like image output: no lower published rate, so never under-charge.
    text_output: Decimal


GPT_IMAGE_PRICES = Prices(Decimal("5"), Decimal("8"), Decimal("30"), Decimal("30"))
MINI_PRICES = Prices(Decimal("2"), Decimal("2.5"), Decimal("8"), Decimal("8"))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    qualities: tuple[str, ...]
    flexible_sizes: bool
    transparent_background: bool
    prices: Prices
    # Edits: which `input_fidelity` values may be sent (gpt-image-2 always works at high fidelity and refuses it),
    # and whether a `markup` overlay is understood (the 2.5 and 2.6 models).
    input_fidelities: tuple[str, ...] = ()
    markup: bool = False


def _family(names: tuple[str, ...], **spec: object) -> dict[str, ModelSpec]:
    return {name: ModelSpec(name=name, **spec) for name in names}  # type: ignore[arg-type]


MODELS: dict[str, ModelSpec] = {
    # gpt-image-2's transparent background is still a preview that gateways answer with 400.
    **_family(
        ("gpt-image-2", "gpt-image-2-2026-04-21"),
        qualities=BASE_QUALITIES,
        flexible_sizes=True,
        transparent_background=False,
        prices=GPT_IMAGE_PRICES,
    ),
    # 2.6 is taken to keep everything 2.5 allows (see docs/decisions.md).
    **_family(
        ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"),
        qualities=EXTENDED_QUALITIES,
        flexible_sizes=True,
        transparent_background=True,
        prices=GPT_IMAGE_PRICES,
        markup=True,
    ),
    **_family(
        ("gpt-image-1.5",),
        qualities=BASE_QUALITIES,
        flexible_sizes=False,
        transparent_background=True,
        prices=GPT_IMAGE_PRICES,
        input_fidelities=("high", "low"),
    ),
    # The ChatGPT model is not documented to take input_fidelity: not sent, rather than risk a refusal.
    **_family(
        ("chatgpt-image-latest",),
        qualities=BASE_QUALITIES,
        flexible_sizes=False,
        transparent_background=True,
        prices=GPT_IMAGE_PRICES,
    ),
    **_family(
        ("gpt-image-1-mini",),
        qualities=BASE_QUALITIES,
        flexible_sizes=False,
        transparent_background=True,
        prices=MINI_PRICES,
        input_fidelities=("low",),  # the SDK: "gpt-image-1-mini supports only low"
    ),
}

DEFAULT_MODEL = "gpt-image-2"

# Retired model -> (date it stopped answering, what to use instead).
RETIRED_MODELS: dict[str, tuple[str, str]] = {
    "gpt-image-1": ("2026-10-23", "gpt-image-1.5"),
    "dall-e-3": ("2026-05-12", "gpt-image-2"),
    "dall-e-2": ("2026-05-12", "gpt-image-1-mini"),
}

RETIRED_QUALITIES = ("standard", "hd")  # DALL-E values

# Edits: what a provider takes as input images and masks.
MAX_EDIT_IMAGES = 16
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024  # each image must be under this
MAX_MASK_BYTES = 4 * 1024 * 1024
INPUT_FORMATS = ("png", "webp", "jpeg")


def parse_size(size: str) -> tuple[int, int] | None:
    """`WxH` as integers, or None for `auto` and anything that is not `WxH`."""
    match = SIZE_PATTERN.fullmatch(size)
    return (int(match.group(1)), int(match.group(2))) if match else None


def describe_models() -> list[dict[str, object]]:
    """The model table as clients see it (GET /v1/models, in OpenAI's list shape): what each model takes, so a form
    built from it offers nothing the API refuses."""
    described: list[dict[str, object]] = []
    for spec in MODELS.values():
        described.append(
            {
                "id": spec.name,
                "object": "model",
                "owned_by": "openai",
                "default": spec.name == DEFAULT_MODEL,
                "qualities": list(spec.qualities),
                "sizes": ["auto", *STANDARD_SIZES],
                # Any WxH within these, on models that take custom sizes.
                "custom_sizes": {
                    "multiple_of": SIZE_MULTIPLE,
                    "max_edge": MAX_EDGE,
                    "max_aspect": MAX_ASPECT,
                    "min_pixels": MIN_PIXELS,
                    "max_pixels": MAX_PIXELS,
                }
                if spec.flexible_sizes
                else None,
                "output_formats": list(OUTPUT_FORMATS),
                # Transparency needs a format with alpha.
                "backgrounds": ["auto", "opaque", *(["transparent"] if spec.transparent_background else [])],
                "transparent_formats": ["png", "webp"],
                "max_n": 10,
                "edits": {
                    "max_images": MAX_EDIT_IMAGES,
                    "input_fidelities": list(spec.input_fidelities),
                    "markup": spec.markup,
                },
            }
        )
    return described
