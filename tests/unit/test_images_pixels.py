"""The one conversion training and serving share: decode, channels, size; bad pixels named."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from maas.data.image_pixels import check_pixel_array, conform, conform_source, decode_base64, decode_image
from maas.errors import InvalidInput, PayloadTooLarge


def encoded(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format)
    return buffer.getvalue()


def test_png_bytes_and_the_same_pixel_array_convert_identically() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (9, 7)).astype(np.uint8)
    from_png = conform_source(encoded(pixels), "x", 9, 7, 1)
    from_list = conform_source(pixels.tolist(), "x", 9, 7, 1)  # type: ignore[arg-type]
    assert from_png.shape == (1, 9, 7) and np.array_equal(from_png, from_list)
    assert np.array_equal(from_png[0], pixels)


def test_gray_to_rgb_replicates_and_rgb_to_gray_uses_luma() -> None:
    gray = np.full((4, 4, 1), 100, dtype=np.uint8)
    assert np.all(conform(gray, 4, 4, 3) == 100)
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert np.all(conform(red, 4, 4, 1) == 76)  # 0.299 * 255


def test_resize_to_the_model_size_keeps_a_constant_image_constant() -> None:
    out = conform(decode_image(encoded(np.full((40, 30, 3), 200), "JPEG"), "x"), 8, 8, 1)
    assert out.shape == (1, 8, 8) and abs(int(out.mean()) - 200) <= 2


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(buffer, "PNG")
    assert np.all(conform(decode_image(buffer.getvalue(), "x"), 4, 4, 1) == 255)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        ([[1, 2], [3]], "different lengths"),
        ([[300, 0]], "from 0 to 255"),
        ([[float("nan"), 0]], "finite"),
        ([["a", "b"]], "numbers"),
        ([[[1, 2]]], "channels"),
        ([], "shape"),
    ],
)
def test_bad_pixel_arrays_say_what_to_fix(pixels: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_pixel_array(pixels, "instances[3]")


def test_base64_with_data_url_prefix_and_invalid_text() -> None:
    data = encoded(np.zeros((2, 2)))
    text = "data:image/png;base64," + base64.b64encode(data).decode()
    assert decode_base64(text, "instances[0]", max_bytes=1000) == data
    with pytest.raises(InvalidInput, match=r"instances\[1\]: not valid base64"):
        decode_base64("not base64!", "instances[1]", max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        decode_base64(base64.b64encode(b"x" * 5000).decode(), "instances[2]", max_bytes=1000)


def test_gif_is_not_accepted_as_png_or_jpeg() -> None:
    buffer = io.BytesIO()
    Image.new("L", (3, 3)).save(buffer, "GIF")
    with pytest.raises(InvalidInput, match="not a readable PNG or JPEG"):
        decode_image(buffer.getvalue(), "member 'a/x.png'")
