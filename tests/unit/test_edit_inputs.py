"""Edit inputs are judged from their bytes: what is refused, by which rule, and what passes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from darkroom import catalog, inputs
from darkroom.inputs import InputRejected, check_image, check_mask
from tests.images import animated_webp, image_bytes, mask_bytes, png_declaring, zip_bytes


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_each_accepted_format_is_read_from_its_bytes(fmt: str) -> None:
    # Given a real image of each accepted format
    data = image_bytes(fmt, (64, 48))

    # When it is checked
    image = check_image(data)

    # Then its format and dimensions come from the bytes
    assert (image.format, image.width, image.height, image.bytes) == (fmt, 64, 48, len(data))


def rule_of(data: bytes) -> str:
    with pytest.raises(InputRejected) as refused:
        check_image(data)
    return refused.value.rule


BAD_INPUTS = [
    ("truncated PNG", lambda: image_bytes("png", (200, 200))[:-40], "image_truncated"),
    ("PNG cut inside a chunk", lambda: image_bytes("png", (200, 200))[:60], "image_truncated"),
    ("PNG with a ZIP appended", lambda: image_bytes("png") + zip_bytes(), "image_trailing_data"),
    ("PNG declaring 100,000 x 100,000 pixels", lambda: png_declaring(100_000, 100_000), "image_too_many_pixels"),
    ("PNG declaring 7,000 x 7,000 pixels", lambda: png_declaring(7_000, 7_000), "image_too_many_pixels"),
    ("GIF renamed .png", lambda: image_bytes("gif"), "image_format"),
    ("ZIP archive", zip_bytes, "image_format"),
    ("empty file", lambda: b"", "image_empty"),
    ("truncated JPEG", lambda: image_bytes("jpeg", (200, 200))[:-200], "image_truncated"),
    ("JPEG with a ZIP appended", lambda: image_bytes("jpeg") + zip_bytes(), "image_trailing_data"),
    ("JPEG, ZIP, then an end marker", lambda: image_bytes("jpeg") + zip_bytes() + b"\xff\xd9", "image_trailing_data"),
    ("PNG carrying a ZIP in its IEND", lambda: _png_with_iend_payload(zip_bytes()), "image_trailing_data"),
    ("PNG of 1,001 text chunks", lambda: _png_with_text_chunks(1_001), "image_too_many_chunks"),
    ("WebP carrying an unknown chunk", lambda: _webp_with_chunk(b"ZIP!", zip_bytes()), "image_unknown_chunk"),
    ("JPEG of 65 scans", lambda: _jpeg_with_scans(65), "image_too_many_scans"),
    ("truncated WebP", lambda: image_bytes("webp", (200, 200))[:-20], "image_truncated_or_trailing_data"),
    ("animated WebP", animated_webp, "image_animated"),
    ("PNG with a flipped byte", lambda: _flip(image_bytes("png", (64, 64)), 60), "image_corrupt"),
]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(("case", "make", "rule"), BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS])
def test_a_bad_input_is_refused_by_its_rule(case: str, make: Callable[[], bytes], rule: str) -> None:
    assert rule_of(make()) == rule


def test_a_jpeg_whose_segments_are_noise_is_refused() -> None:
    data = image_bytes("jpeg", (64, 64))
    assert rule_of(data[:3] + bytes(range(1, 256)) * 4 + data[-2:]) == "image_corrupt"


def test_a_progressive_jpeg_with_its_usual_scans_passes() -> None:
    assert check_image(_jpeg_with_scans(0)).format == "jpeg"
    assert check_image(_jpeg_with_scans(30)).format == "jpeg"


def test_a_jpeg_whose_pixels_do_not_decode_is_refused_as_unreadable() -> None:
    # Given a JPEG whose segments follow one another but whose frame header describes nonsense
    data = bytearray(image_bytes("jpeg", (64, 64)))
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 0  # precision 0 bits

    # Then Pillow's refusal is darkroom's, naming the file
    assert rule_of(bytes(data)) == "image_unreadable"


def _png_with_iend_payload(payload: bytes) -> bytes:
    data = image_bytes("png")
    return data[:-12] + _chunk(b"IEND", payload)


def _png_with_text_chunks(count: int) -> bytes:
    data = image_bytes("png")
    return data[:-12] + _chunk(b"tEXt", b"k\x00v") * count + data[-12:]


def _webp_with_chunk(kind: bytes, payload: bytes) -> bytes:
    data = image_bytes("webp") + kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
    return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]


def _jpeg_with_scans(extra: int) -> bytes:
    """A progressive JPEG with its last scan repeated `extra` times more (each one a pass over every pixel)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * extra + data[-2:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_the_size_limit_is_checked_before_anything_is_read() -> None:
    # Given bytes at the limit (not even an image)
    with pytest.raises(InputRejected) as refused:
        check_image(b"\x89PNG" + b"\x00" * 100, limit=50)

    # Then the refusal is about size, which costs nothing to find out
    assert refused.value.rule == "image_too_large"
    assert catalog.MAX_INPUT_IMAGE_BYTES == 50 * 1024 * 1024


def test_a_mask_with_alpha_and_the_first_image_s_size_passes() -> None:
    first = check_image(image_bytes("png", (64, 48)))
    mask = check_mask(mask_bytes((64, 48), hole=(0, 0, 10, 10)), first)
    assert mask.has_alpha and (mask.width, mask.height) == (64, 48)


@pytest.mark.parametrize(
    ("mask", "rule"),
    [
        (image_bytes("png", (64, 48), mode="RGB"), "mask_alpha"),
        (image_bytes("png", (64, 48), mode="L"), "mask_alpha"),
        (mask_bytes((32, 48)), "mask_dimensions"),
        (image_bytes("webp", (64, 48), mode="RGBA", color=(0, 0, 0, 0)), "mask_format"),
        (image_bytes("png", (64, 48))[:-30], "image_truncated"),
    ],
    ids=["no alpha", "greyscale", "wrong size", "webp", "truncated"],
)
def test_a_bad_mask_is_refused_by_its_rule(mask: bytes, rule: str) -> None:
    first = check_image(image_bytes("png", (64, 48)))
    with pytest.raises(InputRejected) as refused:
        check_mask(mask, first)
    assert refused.value.rule == rule


def test_a_mask_over_4_mb_is_refused_before_it_is_read() -> None:
    first = check_image(image_bytes("png", (64, 48)))
    with pytest.raises(InputRejected) as refused:
        check_mask(b"\x89PNG\r\n\x1a\n" + b"\x00" * catalog.MAX_MASK_BYTES, first)
    assert refused.value.rule == "image_too_large"
    assert "mask" in refused.value.message


def test_a_refusal_names_its_field() -> None:
    with pytest.raises(InputRejected) as refused:
        check_image(image_bytes("gif"))
    error = refused.value.on("image[2]")
    assert (error.field, error.rule) == ("image[2]", "image_format")
    assert "GIF" in error.message


def test_a_palette_png_with_transparency_counts_as_having_alpha() -> None:
    # Given a palette PNG whose transparency is a tRNS chunk rather than an alpha channel
    import io

    from PIL import Image

    image = Image.new("P", (16, 16), 0)
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)

    # Then it can serve as a mask
    assert inputs.check_image(out.getvalue()).has_alpha


def test_a_phones_multi_picture_jpeg_is_taken_as_its_first_picture() -> None:
    # Given a JPEG carrying a second picture as phones write it (MPF: an Ultra HDR gain map, say)
    import io

    from PIL import Image

    out = io.BytesIO()
    primary, gain_map = Image.new("RGB", (64, 48), (200, 80, 20)), Image.new("RGB", (32, 24), (9, 9, 9))
    primary.save(out, "MPO", save_all=True, append_images=[gain_map])

    # Then it is a JPEG of the first picture's size, not trailing data or an animation
    image = check_image(out.getvalue())
    assert (image.format, image.width, image.height) == ("jpeg", 64, 48)


@pytest.mark.parametrize(
    "make",
    [
        lambda data: data[:2] + b"\xff\xfe\x00\x02" * 1_001 + data[2:],  # 1,001 empty comment segments
        lambda data: data[:2] + b"\xff" * 17 + data[2:],  # 17 fill bytes before a marker
    ],
    ids=["thousand-comments", "fill-bytes"],
)
def test_a_jpeg_padded_to_be_slow_to_walk_is_refused(make: Callable[[bytes], bytes]) -> None:
    assert rule_of(make(image_bytes("jpeg"))) == "image_too_many_segments"
