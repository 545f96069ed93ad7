"""Decode one image and convert it to a model's size and channel count: shared by training and serving.

Training converts every uploaded image with :func:`conform`, and the serving runtime converts every predict
input with the same function, so a model sees pixels prepared exactly as it was trained on. Pixels stay
0-255 (uint8 ``[C, H, W]``); normalisation lives inside the exported ONNX graph.

Torch-free (the API process and the serving runtime import it).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from maas.errors import InvalidInput, PayloadTooLarge

ENCODED_FORMATS = ("PNG", "JPEG")
# Pillow warns at ~89 M pixels and refuses at twice that; we stop far sooner: a 4096 x 4096 image is
# already 64 MB decoded, and our models convert to at most 256 x 256.
MAX_IMAGE_PIXELS = 4096 * 4096
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)

PixelSource = bytes | np.ndarray  # encoded PNG/JPEG bytes, or an [H, W] / [H, W, C] pixel array


def _invalid(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", errors=[{"loc": [where], "msg": message}])


def decode_image(data: bytes, where: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open PNG or JPEG bytes and decode them fully (a truncated file fails here, not later).

    The pixel count is checked from the header before any pixel is decoded. ``where`` names the image in
    error messages (an archive member, a row, a predict instance)."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(ENCODED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"{where}: the image has more than {max_pixels:,} pixels", errors=[{"loc": [where], "msg": "too large"}]
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _invalid(where, "not a readable PNG or JPEG image") from None
    width, height = image.size
    if width * height > max_pixels or width < 1 or height < 1:
        raise PayloadTooLarge(
            f"{where}: the image is {width} x {height} pixels; at most {max_pixels:,} pixels are accepted",
            errors=[{"loc": [where], "msg": "too many pixels"}],
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise _invalid(where, f"the {image.format} image is corrupt or truncated") from None
    return image


def image_channels(image: Image.Image) -> int:
    """1 for grayscale modes, 3 for everything else (alpha is dropped, palettes expanded)."""
    return 1 if image.mode in _GRAY_MODES else 3


def check_pixel_array(array: Any, where: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Validate ``[H, W]`` or ``[H, W, C]`` (C in 1, 3, 4) pixel values 0-255; returns uint8 ``[H, W, C]``."""
    try:
        values = np.asarray(array)
    except ValueError:
        raise _invalid(
            where, "pixel rows have different lengths; send [height][width] or [height][width][channels]"
        ) from None
    if values.dtype == np.bool_ or values.dtype.kind not in "iuf":
        raise _invalid(where, "pixels must be numbers from 0 to 255")
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] not in (1, 3, 4):
        raise _invalid(
            where,
            f"pixel array of shape {list(values.shape)}; expected [height][width] or [height][width][channels] "
            "with 1, 3 or 4 channels",
        )
    height, width = values.shape[:2]
    if height < 1 or width < 1:
        raise _invalid(where, "the pixel array is empty")
    if height * width > max_pixels:
        raise PayloadTooLarge(f"{where}: {height} x {width} pixels; at most {max_pixels:,} are accepted")
    if values.dtype != np.uint8:
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise _invalid(where, "pixel values must be finite numbers from 0 to 255")
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise _invalid(where, f"pixel values must be from 0 to 255; found values from {low} to {high}")
        values = np.rint(values).astype(np.uint8)
    return values


def _as_image(source: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(source, Image.Image):
        if source.mode == "I" or source.mode.startswith("I;16"):  # 16-bit gray: scale to 8 bits, not clip
            wide = np.asarray(source, dtype=np.float64)
            return Image.fromarray(np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8), mode="L")
        return source
    channels = source.shape[2]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(source[:, :, 0] if channels == 1 else source, mode=mode)


def conform(source: Image.Image | np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Convert a decoded image (or a checked uint8 ``[H, W, C]`` array) to uint8 ``[channels, height, width]``.

    Channels first (gray ↔ RGB with Pillow's ITU-R 601 luma, alpha dropped), then a bilinear resize (Pillow
    filters over the whole footprint when shrinking)."""
    if isinstance(source, np.ndarray) and source.shape == (height, width, channels):
        return np.ascontiguousarray(source.transpose(2, 0, 1))
    image = _as_image(source)
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        image = image.convert(target_mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def conform_source(source: PixelSource, where: str, height: int, width: int, channels: int) -> np.ndarray:
    """Decode (bytes) or check (array) ``source``, then :func:`conform` it."""
    if isinstance(source, bytes | bytearray):
        return conform(decode_image(bytes(source), where), height, width, channels)
    return conform(check_pixel_array(source, where), height, width, channels)


def decode_base64(text: str, where: str, *, max_bytes: int) -> bytes:
    """The bytes of a base64 string, with or without a ``data:image/...;base64,`` prefix."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    if not body:
        raise _invalid(where, "the base64 image is empty")
    if len(body) > math.ceil(max_bytes / 3) * 4 + 4:
        raise PayloadTooLarge(f"{where}: the encoded image is over {max_bytes:,} bytes")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(where, "not valid base64; send a base64-encoded PNG or JPEG, or a pixel array") from None
