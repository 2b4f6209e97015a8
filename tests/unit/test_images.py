"""Images of any bit depth as 8-bit ones: what the endpoint, workflow uploads and the pages' grids share."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from backend.images import displayable, eight_bit
from backend.workflow_defs import encode_upload


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_wide_images_are_scaled_and_8_bit_ones_left_alone():
    wide = np.array([[0, 257, 65535]], dtype=np.uint16)
    assert np.asarray(eight_bit(Image.fromarray(wide))).tolist() == [[0, 1, 255]]
    dark = np.array([[0, 200]], dtype=np.uint16)  # 16-bit and near black: stays near black
    assert np.asarray(eight_bit(Image.fromarray(dark))).tolist() == [[0, 1]]
    assert np.asarray(eight_bit(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)))).tolist() == [[0, 128, 255]]
    assert np.asarray(eight_bit(Image.fromarray(np.array([[0, 100, 200]], np.int32)))).tolist() == [[0, 100, 200]]
    big = np.array([[0, 70000 * 2]], dtype=np.int32)
    assert np.asarray(eight_bit(Image.fromarray(big))).tolist() == [[0, 255]]
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert eight_bit(rgb) is rgb


def test_a_16_bit_upload_is_stored_scaled_not_white():
    wide = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)
    stored = np.asarray(Image.open(io.BytesIO(encode_upload("g.png", png(Image.fromarray(wide)), (32, 32)))))
    assert stored.shape == (32, 32, 3) and stored[..., 0].max() == round(wide.max() / 257)
    assert (stored[..., 0] == 255).mean() < 0.01  # convert("RGB") alone made 99% of it white


def test_displayable_gives_browser_ready_bytes_or_none():
    ok = png(Image.new("RGB", (4, 4)))
    assert displayable(ok) == ok  # nothing to do: the same bytes
    for img, fmt in ((Image.fromarray(np.full((4, 4), 40000, np.uint16)), "PNG"), (Image.new("CMYK", (4, 4)), "JPEG"),
                     (Image.new("RGB", (4, 4)), "BMP"), (Image.new("RGB", (4, 4)), "TIFF")):
        shown = Image.open(io.BytesIO(displayable(png(img, fmt))))
        assert shown.format == "PNG" and shown.mode in ("L", "RGB", "RGBA")
    assert displayable(b"not an image") is None and displayable(png(Image.new("RGB", (4, 4)))[:20]) is None
    # Over what an endpoint takes, an image is not decoded to be shown (7100 x 7100: 50 million pixels).
    huge = png(Image.new("1", (7100, 7100)))
    assert len(huge) < 100_000 and displayable(huge) is None


def test_the_pages_image_grid_draws_a_16_bit_png_and_names_an_unreadable_one():
    """st.image raised 'cannot write mode I;16 as JPEG' on the Deploy and Monitor pages (a traceback box)."""
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import io

        import numpy as np
        from PIL import Image

        from ui.widgets import image_grid

        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(buf, format="PNG")
        image_grid([(buf.getvalue(), "sixteen-bit"), (b"garbage", "broken")])

    at = AppTest.from_function(page, default_timeout=30).run()
    assert not at.exception
    assert [c.value for c in at.caption] == ["broken (cannot be drawn)"]


def test_an_upload_cut_short_says_so_and_one_that_is_no_image_says_that():
    import pytest

    from backend.api import ValidationError

    jpeg = png(Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)), "JPEG")
    with pytest.raises(ValidationError, match="trunc.jpg is a JPEG file whose data is cut short or corrupt"):
        encode_upload("trunc.jpg", jpeg[: len(jpeg) // 2], (32, 32))
    with pytest.raises(ValidationError, match="notes.png is not an image that can be read: send a PNG or JPEG"):
        encode_upload("notes.png", b"plain text", (32, 32))
    webp = png(Image.new("RGB", (40, 30), (9, 9, 9)), "WEBP")  # any format Pillow reads is stored as a PNG
    assert Image.open(io.BytesIO(encode_upload("photo.png", webp, (32, 32)))).format == "PNG"
