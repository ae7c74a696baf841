"""What an image really is, read with Pillow from its header (no full decode)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from darkroom.errors import ProviderBadResponse

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
_PILLOW_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg"}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect(data: bytes) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = _PILLOW_FORMATS.get(image.format or "")
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        # The provider has billed these bytes: whatever Pillow makes of them, the job ends rather than crashing.
        raise ProviderBadResponse(
            f"the provider returned bytes that are not an image ({exc.__class__.__name__})"
        ) from None
    if fmt is None:
        raise ProviderBadResponse("the provider returned an image in a format darkroom does not store")
    return ImageInfo(fmt, width, height)
