"""Image fixtures made on the spot, good and bad, for tests of edit inputs."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def image_bytes(
    fmt: str = "png", size: tuple[int, int] = (64, 48), *, mode: str = "RGB", color: tuple[int, ...] = (40, 120, 200)
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color[: len(mode)] if mode != "L" else color[0]).save(out, fmt.upper())
    return out.getvalue()


def mask_bytes(size: tuple[int, int] = (64, 48), *, hole: tuple[int, int, int, int] | None = None) -> bytes:
    """An RGBA mask, opaque except a fully transparent `hole` (left, top, right, bottom): what to edit."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    if hole:
        mask.paste((0, 0, 0, 0), hole)
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header claims width x height pixels (a decompression bomb's declaration)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.txt", "not an image")
    return out.getvalue()


def animated_webp(size: tuple[int, int] = (32, 32)) -> bytes:
    frames = [Image.new("RGB", size, (i * 80, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()
