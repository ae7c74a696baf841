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

# Structure limits, far above what any encoder writes, far below what costs seconds to walk or decode.
MAX_PNG_CHUNKS = 100_000  # IDAT chunks of 8 KB make 6,400 for 50 MB
MAX_PNG_ANCILLARY_CHUNKS = 1_000
MAX_JPEG_SCANS = 64  # a progressive JPEG has about 10
MAX_JPEG_SEGMENTS = 1_000  # a camera's JPEG has about 20
MAX_JPEG_FILL = 16  # fill bytes before one marker (usually none)
MAX_WEBP_CHUNKS = 64

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
        _check_jpeg_segments(data, what)
    else:
        _check_webp_chunks(data, what)


def _trailing(what: str, extra: int) -> InputRejected:
    return InputRejected(
        "image_trailing_data",
        f"The {what} has {extra} bytes after the end of its image data (an appended file, a motion photo's video?); "
        "save it again as a plain image.",
    )


def _check_png_chunks(data: bytes, what: str) -> None:
    """Every chunk whole and checksummed up to an empty IEND, nothing after it, and not a flood of chunks that
    would cost seconds to walk."""
    offset = len(PNG_SIGNATURE)
    chunks = ancillary = 0
    while True:
        if offset + 12 > len(data):
            raise InputRejected("image_truncated", f"The {what} is a PNG cut short before its end.")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise InputRejected("image_truncated", f"The {what} is a PNG cut short inside its {kind!r} chunk.")
        chunks += 1
        ancillary += kind[0:1].islower()
        if chunks > MAX_PNG_CHUNKS or ancillary > MAX_PNG_ANCILLARY_CHUNKS:
            raise InputRejected("image_too_many_chunks", f"The {what} is a PNG of more chunks than an image needs.")
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[offset + 4 : end - 4]) != crc:
            raise InputRejected("image_corrupt", f"The {what}'s PNG chunk {kind!r} fails its checksum.")
        offset = end
        if kind == b"IEND":
            if length:  # IEND is empty: anything in it is something else riding along
                raise _trailing(what, length)
            break
    if offset != len(data):
        raise _trailing(what, len(data) - offset)


def _check_jpeg_segments(data: bytes, what: str) -> None:
    """Segment by segment from SOI to the first EOI, through each scan's entropy-coded data, and nothing after it
    but padding. A progressive JPEG's scans each pass over every pixel: a small file of thousands of them costs
    minutes to decode, so their number is bounded."""
    size, pos, scans, segments, pictures = len(data), 2, 0, 0, False

    def cut_short() -> InputRejected:
        return InputRejected("image_truncated", f"The {what} is a JPEG cut short before its end.")

    def too_many(kind: str) -> InputRejected:
        return InputRejected("image_too_many_segments", f"The {what} is a JPEG of more {kind} than an image needs.")

    while True:
        if pos >= size:
            raise cut_short()
        if data[pos] != 0xFF:
            raise InputRejected("image_corrupt", f"The {what} is a JPEG whose segments do not follow one another.")
        fill = pos
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos - fill > MAX_JPEG_FILL:
            raise too_many("fill bytes")
        if pos >= size:
            raise cut_short()
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise too_many("segments")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            continue
        if pos + 2 > size:
            raise cut_short()
        length = int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xD8 or length < 2:
            raise InputRejected("image_corrupt", f"The {what} is a JPEG with a malformed segment.")
        pictures = pictures or (marker == 0xE2 and data[pos + 2 : pos + 6] == b"MPF\x00")
        pos += length
        if marker != 0xDA:  # not a scan: its length covers it
            continue
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise InputRejected(
                "image_too_many_scans", f"The {what} is a JPEG of more than {MAX_JPEG_SCANS} scans; save it again."
            )
        while True:  # entropy-coded data: 0xFF is stuffed as FF00, restarts are FFD0-FFD7
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                raise cut_short()
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
            elif following == 0xFF:
                pos += 1
            else:
                break
    # A phone's JPEG may carry more pictures after the first (MPF: an Ultra HDR gain map, a depth map), which its
    # APP2 segment declares; anything else after the end marker is something else riding along.
    if data[pos:].strip(b"\x00") and not pictures:
        raise _trailing(what, len(data) - pos)


# What a still WebP is made of; anything else in its RIFF container is something else riding along.
_WEBP_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP", b"EXIF", b"XMP "}


def _check_webp_chunks(data: bytes, what: str) -> None:
    declared = struct.unpack("<I", data[4:8])[0] + 8
    if declared != len(data):
        raise InputRejected(
            "image_truncated_or_trailing_data",
            f"The {what} is {len(data)} bytes but its WebP header says {declared}: it is cut short, or has something "
            "appended.",
        )
    pos, chunks = 12, 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise InputRejected("image_truncated", f"The {what} is a WebP cut short inside a chunk.")
        kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks += 1
        if kind not in _WEBP_CHUNKS or chunks > MAX_WEBP_CHUNKS:
            raise InputRejected("image_unknown_chunk", f"The {what} is a WebP carrying a chunk no image needs.")
        pos += 8 + length + (length % 2)
    if pos != len(data):
        raise InputRejected("image_truncated", f"The {what} is a WebP cut short inside a chunk.")


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
            if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":  # MPO: a photo and its gain map
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
