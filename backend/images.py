"""Images of any bit depth as 8-bit ones (Pillow and numpy only: the endpoint imports this).

Pillow's `convert("RGB")` clips 16- and 32-bit images (a 16-bit grayscale PNG opens as mode I;16)
to their low 8 bits' range, so most of such an image turns white, and `st.image` cannot show them
at all. Every place that decodes an image someone sent (the endpoint, workflow uploads, the pages'
image grids) scales them down first.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def eight_bit(img):  # PIL.Image.Image -> PIL.Image.Image
    """`img` itself when it already has 8 bits per channel, else a mode L image scaled to 0..255."""
    if img.mode not in WIDE_MODES:
        return img
    from PIL import Image

    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":  # floats: 0..1 when they fit, else 0..255
        scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
    elif img.mode.startswith("I;16"):  # 16-bit: 65535 is white, however dark this image is
        scale = 255.0 / 65535.0
    else:  # 32-bit integers: 8- or 16-bit data by their range, else scaled to their top
        top = float(arr.max()) if arr.size else 0.0
        scale = 1.0 if top <= 255 else 255.0 / 65535.0 if top <= 65535 else 255.0 / top
    out = np.clip(np.nan_to_num(arr * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(out, "L")


def refuse_decompression_bombs() -> None:
    """Make Pillow's DecompressionBombWarning (an image over its MAX_IMAGE_PIXELS) an exception in this process:
    a refusal the caller words, not a line on stderr. Installed, not scoped with warnings.catch_warnings, which
    is not thread-safe (Streamlit runs each session in its own thread); put back at the front whenever another
    filter came first (a test framework resets them per test)."""
    from PIL import Image

    first = next((f for f in warnings.filters if f[2] is not None and issubclass(Image.DecompressionBombWarning, f[2])),
                 None)
    if first is None or first[0] != "error" or first[2] is not Image.DecompressionBombWarning:
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


MAX_DISPLAY_PIXELS = 40_000_000  # what a local endpoint takes; a larger image is not decoded to be shown


def displayable(data: bytes) -> bytes | None:
    """PNG bytes a browser shows for any image Pillow reads (16-bit ones scaled), or None when unreadable."""
    from PIL import Image

    refuse_decompression_bombs()  # over Pillow's limit: not shown, and no warning on stderr
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_DISPLAY_PIXELS:  # not decoded: the endpoint refuses it anyway
                return None
            img.load()
            if img.format in ("PNG", "JPEG", "GIF", "WEBP") and img.mode not in WIDE_MODES and img.mode != "CMYK":
                return data
            out = eight_bit(img)
            if out.mode not in ("L", "RGB", "RGBA"):
                out = out.convert("RGB")
            buf = io.BytesIO()
            out.save(buf, format="PNG")
            return buf.getvalue()
    except Exception:  # noqa: BLE001 - Pillow raises many types for broken data; the caller says "cannot show"
        return None
