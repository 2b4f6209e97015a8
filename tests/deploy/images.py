"""Test images, good and hostile, built in memory."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(width: int = 32, height: int = 32, seed: int = 0, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def jpeg_bytes(width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    return png_bytes(width, height, seed, "RGB", "JPEG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 20000) -> bytes:
    """A valid greyscale PNG of side x side zero pixels: a few hundred KB that decode to side^2 bytes."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    rows_per_chunk = max(1, (4 << 20) // len(row))
    parts = []
    for start in range(0, side, rows_per_chunk):
        parts.append(comp.compress(row * min(rows_per_chunk, side - start)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
