"""What an edit's input really is: every image and mask is judged from its own bytes before any provider sees it.

The declared content type and file name are never trusted. In order, cheapest first:
1. size: each image under 50 MB, a mask under 4 MB (the provider's limits);
2. the real type, from the first bytes: PNG, JPEG or WebP, nothing else is ever opened;
3. the file's structure: a PNG's chunks and their checksums up to IEND, a JPEG from its start to its end marker, a
   WebP's RIFF length; nothing may follow the image's end (a ZIP appended to a PNG, a truncated upload);
4. its header, read by Pillow restricted to the sniffed format: the declared pixel count is refused above
   MAX_INPUT_PIXELS before any pixel is decoded (a decompression bomb), and so is an animation;
5. then the pixels are decoded once, so an image the provider could not read is refused here, not billed there.
A mask (and a markup overlay) must also be a PNG with an alpha channel and the same dimensions as the first image.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from darkroom import catalog
from darkroom.errors import FieldError

# darkroom's own bomb limit (the provider names none): 40 megapixels takes any camera's photo but a 48 MP sensor's
# full resolution, and bounds a decode at 160 MB.
MAX_INPUT_PIXELS = 40_000_000
# JPEGs are decoded at a reduced scale: enough to prove the stream reads, at a sixty-fourth of the memory.
JPEG_CHECK_EDGE = 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_FORMATS = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class InputRejected(Exception):
    """An input breaks a rule: `rule` is the stable code, the message says what to do."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def on(self, field: str) -> FieldError:
        return FieldError(field, self.rule, self.message)


@dataclass(frozen=True)
class InputImage:
    format: str
    width: int
    height: int
    bytes: int
    has_alpha: bool

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"


def sniff(data: bytes) -> str | None:
    """The format the bytes are, from their signature: png, jpeg, webp, or None."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(data: bytes, *, limit: int = catalog.MAX_INPUT_IMAGE_BYTES, what: str = "image") -> InputImage:
    """The image the bytes hold, or InputRejected naming the first rule they break."""
    if not data:
        raise InputRejected("image_empty", f"The {what} is empty.")
    if len(data) >= limit:
        raise InputRejected("image_too_large", f"The {what} must be under {limit // (1024 * 1024)} MB.")
    fmt = sniff(data)
    if fmt is None:
        raise InputRejected("image_format", f"The {what} is {_describe(data)}; send PNG, JPEG or WebP.")
    _check_structure(fmt, data, what)
    return _check_pixels(fmt, data, what)


def check_mask(
    data: bytes, first: InputImage, *, what: str = "mask", limit: int = catalog.MAX_MASK_BYTES
) -> InputImage:
    """A mask (or a markup overlay, `what="markup"`): a PNG with an alpha channel, the size of the first image."""
    mask = check_image(data, limit=limit, what=what)
    if mask.format != "png":
        raise InputRejected(f"{what}_format", f"The {what} must be a PNG; it is {mask.format.upper()}.")
    if not mask.has_alpha:
        raise InputRejected(
            f"{what}_alpha",
            f"The {what} needs an alpha channel: "
            + ("fully transparent pixels mark what to edit." if what == "mask" else "it is a transparent overlay."),
        )
    if (mask.width, mask.height) != (first.width, first.height):
        raise InputRejected(
            f"{what}_dimensions",
            f"The {what} is {mask.width}x{mask.height}; it must match the first image, {first.width}x{first.height}.",
        )
    return mask


def _describe(data: bytes) -> str:
    for signature, name in _OTHER_FORMATS.items():
        if data.startswith(signature):
            return f"a {name}"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    return "not an image darkroom recognises"


# The structure of each format, walked without decoding a pixel.


def _check_structure(fmt: str, data: bytes, what: str) -> None:
    if fmt == "png":
        _check_png_chunks(data, what)
    elif fmt == "jpeg":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise InputRejected(
                "image_truncated_or_trailing_data",
                f"The {what} does not end where its JPEG data ends: it is cut short, or has something appended "
                "(a motion photo's video, an archive). Save it again as a plain JPEG.",
            )
    else:  # webp: RIFF says exactly how long the file is
        declared = struct.unpack("<I", data[4:8])[0] + 8
        if declared != len(data):
            raise InputRejected(
                "image_truncated_or_trailing_data",
                f"The {what} is {len(data)} bytes but its WebP header says {declared}: it is cut short, or has "
                "something appended.",
            )


def _check_png_chunks(data: bytes, what: str) -> None:
    offset = len(PNG_SIGNATURE)
    while True:
        if offset + 12 > len(data):
            raise InputRejected("image_truncated", f"The {what} is a PNG cut short before its end.")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise InputRejected("image_truncated", f"The {what} is a PNG cut short inside its {kind!r} chunk.")
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[offset + 4 : end - 4]) != crc:
            raise InputRejected("image_corrupt", f"The {what}'s PNG chunk {kind!r} fails its checksum.")
        offset = end
        if kind == b"IEND":
            break
    if offset != len(data):
        raise InputRejected(
            "image_trailing_data",
            f"The {what} has {len(data) - offset} bytes after the end of its PNG data (an appended file?); "
            "send the image alone.",
        )


def _check_pixels(fmt: str, data: bytes, what: str) -> InputImage:
    from PIL import Image

    try:
        # Only the sniffed format's plugin may open it; Pillow's own bomb check is darkroom's below, stricter.
        with Image.open(io.BytesIO(data), formats=[_PILLOW_NAMES[fmt]]) as image:
            width, height = image.size
            if width * height > MAX_INPUT_PIXELS:
                raise InputRejected(
                    "image_too_many_pixels",
                    f"The {what} declares {width}x{height} pixels; darkroom takes at most "
                    f"{MAX_INPUT_PIXELS // 1_000_000} megapixels.",
                )
            if getattr(image, "n_frames", 1) > 1:
                raise InputRejected("image_animated", f"The {what} is animated; send a still image.")
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            if fmt == "jpeg":
                image.draft("RGB", (JPEG_CHECK_EDGE, JPEG_CHECK_EDGE))
            image.load()
    except InputRejected:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, far above darkroom's, refused on open
        raise InputRejected(
            "image_too_many_pixels",
            f"The {what} declares more pixels than darkroom takes ({MAX_INPUT_PIXELS // 1_000_000} megapixels).",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputRejected(
            "image_unreadable", f"The {what} could not be read as {fmt.upper()} ({exc.__class__.__name__})."
        ) from None
    if width < 1 or height < 1:
        raise InputRejected("image_unreadable", f"The {what} has no pixels.")
    return InputImage(fmt, width, height, len(data), has_alpha)
