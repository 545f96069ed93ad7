"""Image datasets: a zip of class folders, an NPZ of pixel arrays with labels, or a Parquet of images.

An upload is recognised by its bytes, never trusted by its name: a zip (``PK\\x03\\x04``) is an image
dataset (or an NPZ, a zip of ``.npy`` arrays), Parquet is one when it holds a binary (PNG/JPEG bytes) or
list (pixel arrays) column beside a label column. Archives are read in memory, member by member, and
nothing is ever extracted to disk (:mod:`maas.data.archives` holds the checks: paths, links, bombs).
Every image is decoded at upload so a corrupt one is a 422 naming it, not a training job failing later.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from maas.data.archives import read_zip_members
from maas.data.formats import parquet_failure
from maas.data.image_pixels import (
    MAX_IMAGE_PIXELS,
    PixelSource,
    check_pixel_array,
    conform,
    decode_image,
    image_channels,
)
from maas.errors import InvalidInput, PayloadTooLarge

IMAGE_FORMATS = ("image-zip", "npz", "image-parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_KEYS = ("x", "images", "image", "pixels", "data", "features", "x_train")
LABEL_KEYS = ("y", "labels", "label", "targets", "target", "classes", "class", "y_train")
LABEL_COLUMNS = ("label", "labels", "class", "target", "y", "category")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"
_FILE_LOC = ["body", "file"]
_NO_LIMIT = 2**62


def _invalid(detail: str, **extra: Any) -> InvalidInput:
    return InvalidInput(detail, errors=[{"loc": _FILE_LOC, "msg": detail, **extra}])


@dataclass(frozen=True)
class ImageUploadProfile:
    format: str  # "image-zip" | "npz" | "image-parquet"
    row_count: int
    columns: list[dict[str, Any]]


@dataclass(frozen=True)
class ImageDataset:
    """Every image of a dataset (still encoded, or as pixel arrays) with its label, in a stable order."""

    sources: Sequence[PixelSource]  # PNG/JPEG bytes, or uint8 [H, W, C] arrays
    labels: list[Any]  # JSON scalars: folder names (str) or the labels stored with the pixels
    names: list[str]  # where each image came from, for messages: a member name or "row 12"

    def __len__(self) -> int:
        return len(self.labels)

    def converted(self, height: int, width: int, channels: int) -> np.ndarray:
        """All images as uint8 ``[N, channels, height, width]``, converted like predict inputs."""
        out = np.empty((len(self), channels, height, width), dtype=np.uint8)
        for i, (source, name) in enumerate(zip(self.sources, self.names, strict=True)):
            image = decode_image(source, name) if isinstance(source, bytes) else source
            out[i] = conform(image, height, width, channels)
        return out


# --- recognising and profiling an upload ----------------------------------------------------------------


def inspect_image_upload(
    content: bytes, filename: str, *, max_members: int, max_unpacked_bytes: int
) -> ImageUploadProfile | None:
    """Profile an image dataset; None when ``content`` is not one (it is then parsed as a table).

    Raises InvalidInput (PayloadTooLarge for limits) naming the member, array or row to fix."""
    lower = filename.lower()
    if content[:4] in _ZIP_MAGIC:
        dataset, format = _read_zip(content, lower, max_members, max_unpacked_bytes)
    elif content[:6] == _NPY_MAGIC:
        raise _invalid(
            "a single .npy file holds one array; save the images and their labels together with "
            "numpy.savez('data.npz', x=images, y=labels)"
        )
    elif content[:4] == _PARQUET_MAGIC:
        if not _has_image_column(content):
            return None
        dataset, format = _read_parquet(content, max_unpacked_bytes), "image-parquet"
    elif lower.endswith((".zip", ".npz")):
        raise _invalid(f"'{filename}' is named like a zip archive but is not one (it does not start with 'PK')")
    else:
        return None
    return _profile(dataset, format)


def load_image_dataset(
    content: bytes, format: str, *, max_members: int = _NO_LIMIT, max_unpacked_bytes: int = _NO_LIMIT
) -> ImageDataset:
    """Read a stored dataset version (already checked at upload) for training."""
    if format in ("image-zip", "npz"):
        dataset, _ = _read_zip(content, "", max_members, max_unpacked_bytes)
        return dataset
    if format == "image-parquet":
        return _read_parquet(content, max_unpacked_bytes)
    raise ValueError(f"unknown image dataset format {format!r}")


def preview_images(content: bytes, format: str, rows: int) -> tuple[list[str], list[list[Any]]]:
    """Column names and the first ``rows`` images described without pixels: index, source, label, size."""
    dataset = load_image_dataset(content, format)
    columns = ["index", "source", "label", "height", "width", "channels"]
    out: list[list[Any]] = []
    for i in range(min(rows, len(dataset))):
        height, width, channels = source_shape(dataset.sources[i], dataset.names[i])
        out.append([i, dataset.names[i], dataset.labels[i], height, width, channels])
    return columns, out


def source_shape(source: PixelSource, name: str) -> tuple[int, int, int]:
    """(height, width, channels) of one image; channels 1 (gray) or 3 (colour)."""
    if isinstance(source, bytes):
        image = decode_image(source, name)
        return image.height, image.width, image_channels(image)
    channels = 1 if source.shape[2] == 1 else 3
    return int(source.shape[0]), int(source.shape[1]), channels


def _profile(dataset: ImageDataset, format: str) -> ImageUploadProfile:
    counts = Counter(str(label) for label in dataset.labels)
    if len(counts) < 2:  # checked before decoding anything: cheap
        only = next(iter(counts), None)
        raise _invalid(
            f"the dataset has only one class ('{only}'); a classifier needs images of at least two classes"
            if only is not None
            else "the dataset holds no images"
        )
    sizes: Counter[str] = Counter()
    channel_counts: Counter[int] = Counter()
    for source, name in zip(dataset.sources, dataset.names, strict=True):
        height, width, channels = source_shape(source, name)  # decodes fully: a corrupt image is named here
        sizes[f"{height}x{width}"] += 1
        channel_counts[channels] += 1
    common = sizes.most_common(1)[0][0]
    height, width = (int(part) for part in common.split("x"))
    image_stats: dict[str, Any] = {
        "height": height,  # the most common size: what a model converts to unless told otherwise
        "width": width,
        "channels": 3 if channel_counts[3] else 1,
        "sizes": dict(sizes.most_common(20)),
        "distinct_sizes": len(sizes),
    }
    label_stats: dict[str, Any] = {"counts": dict(sorted(counts.items()))}
    # the facts sit at the top level (what families read) and again under "stats" (what the API shows)
    image_column = {"name": "image", "type": "image", "missing": 0, **image_stats, "stats": image_stats}
    label_column = {"name": "label", "type": "categorical", "unique": len(counts), "missing": 0, **label_stats}
    label_column["stats"] = label_stats
    return ImageUploadProfile(format=format, row_count=len(dataset), columns=[image_column, label_column])


# --- zip of class folders, or NPZ -----------------------------------------------------------------------


def _read_zip(content: bytes, lower_name: str, max_members: int, max_bytes: int) -> tuple[ImageDataset, str]:
    members = read_zip_members(content, max_members=max_members, max_unpacked_bytes=max_bytes)
    if not members:
        raise _invalid(
            "the archive holds no files; put each class's images in a folder named after the class "
            "(cat/1.png, dog/2.png) and zip the folders"
        )
    if all(name.lower().endswith(".npy") for name, _ in members):
        return _read_npz(members), "npz"
    if lower_name.endswith(".npz"):
        raise _invalid("the .npz archive holds files that are not .npy arrays; save it with numpy.savez")
    return _read_class_folders(members), "image-zip"


def _class_paths(members: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(class, member) pairs: each member must sit in a class folder, below at most one common top folder."""
    parts = [name.split("/") for name, _ in members]
    tops = {p[0] for p in parts}
    strip = 1 if len(tops) == 1 and all(len(p) >= 3 for p in parts) else 0
    out: list[tuple[str, str]] = []
    for (name, _), path in zip(members, parts, strict=True):
        rest = path[strip:]
        if len(rest) != 2:
            where = "is not inside a class folder" if len(rest) < 2 else "is nested below its class folder"
            raise _invalid(
                f"member '{name}' {where}; the archive must hold one folder per class with the images directly "
                "inside (cat/1.png, dog/2.png), optionally under one top folder",
                member=name,
            )
        out.append((rest[0], name))
    return out


def _read_class_folders(members: list[tuple[str, bytes]]) -> ImageDataset:
    """Images stay encoded here; :func:`_profile` decodes each at upload, naming a corrupt one."""
    for name, _ in members:
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise _invalid(
                f"member '{name}' is not an image; the archive may hold only PNG or JPEG files "
                f"({', '.join(IMAGE_SUFFIXES)}) in class folders",
                member=name,
            )
    labelled = _class_paths(members)
    data = dict(members)
    return ImageDataset(
        sources=[data[name] for _, name in labelled],
        labels=[label for label, _ in labelled],
        names=[f"member '{name}'" for _, name in labelled],
    )


def _pick(arrays: dict[str, np.ndarray], keys: Sequence[str], what: str, others: set[str]) -> str:
    by_lower = {name.lower(): name for name in arrays}
    for key in keys:
        if key in by_lower and by_lower[key] not in others:
            return by_lower[key]
    raise _invalid(
        f"cannot tell which array holds the {what}: the NPZ has {sorted(arrays)}; name them 'x' (images) "
        "and 'y' (labels)"
    )


def _read_npz(members: list[tuple[str, bytes]]) -> ImageDataset:
    arrays: dict[str, np.ndarray] = {}
    for name, data in members:
        key = name[: -len(".npy")]
        try:
            arrays[key] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            message = "it holds Python objects, which are never loaded" if "pickle" in str(exc) else str(exc)
            raise _invalid(f"array '{key}' cannot be read: {message}", member=name) from None
        except (OSError, EOFError):
            raise _invalid(f"array '{key}' is corrupt or truncated", member=name) from None
    if len(arrays) == 2 and sorted(a.ndim for a in arrays.values())[0] == 1:
        labels_key = next(k for k, a in arrays.items() if a.ndim == 1)
        images_key = next(k for k in arrays if k != labels_key)
        if any(k.lower() in LABEL_KEYS for k in arrays) and images_key.lower() in LABEL_KEYS:
            images_key, labels_key = labels_key, images_key
    else:
        images_key = _pick(arrays, IMAGE_KEYS, "images", set())
        labels_key = _pick(arrays, LABEL_KEYS, "labels", {images_key})
    images = _image_stack(arrays[images_key], f"array '{images_key}'")
    labels = _label_values(arrays[labels_key], f"array '{labels_key}'", len(images))
    return ImageDataset(sources=images, labels=labels, names=[f"image {i}" for i in range(len(labels))])


def _image_stack(array: np.ndarray, where: str) -> list[np.ndarray]:
    """``[N, H, W]``, ``[N, H, W, C]``, ``[N, C, H, W]`` (C in 1, 3) or flat square ``[N, H*W]`` → per-image
    checked uint8 ``[H, W, C]`` views."""
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise _invalid(
                f"{where} has shape {list(array.shape)}: flat rows must be square grayscale images (like 784 = "
                "28 x 28); store images as [N, height, width] or [N, height, width, channels]"
            )
        array = array.reshape(array.shape[0], side, side)
    if array.ndim == 4 and array.shape[3] not in (1, 3, 4) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)  # channels first
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3, 4)):
        raise _invalid(
            f"{where} has shape {list(array.shape)}; expected [N, height, width] or [N, height, width, channels] "
            "with 1, 3 or 4 channels"
        )
    if array.shape[0] == 0:
        raise _invalid(f"{where} holds no images")
    count, height, width = array.shape[:3]
    if height * width > MAX_IMAGE_PIXELS:
        raise PayloadTooLarge(
            f"{where}: images of {height} x {width} pixels; at most {MAX_IMAGE_PIXELS:,} are accepted"
        )
    # checked as one tall image: dtype and value range in one vectorised pass
    tall = check_pixel_array(array.reshape(count * height, width, *array.shape[3:]), where, max_pixels=_NO_LIMIT)
    return list(tall.reshape(count, height, width, tall.shape[2]))


def _label_values(array: np.ndarray, where: str, count: int) -> list[Any]:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) != count:
        raise _invalid(f"{where} has shape {list(array.shape)}; expected one label per image ({count})")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise _invalid(f"{where} has missing (NaN) labels; every image needs a label")
        if np.all(np.mod(array, 1) == 0):
            return [int(v) for v in array.tolist()]
        raise _invalid(f"{where} holds fractional numbers; labels must be class names or integers")
    if array.dtype.kind in "iub":
        return [int(v) for v in array.tolist()]
    if array.dtype.kind in "US":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()]
    raise _invalid(f"{where} has dtype {array.dtype}; labels must be integers or strings")


# --- Parquet --------------------------------------------------------------------------------------------


def _image_like(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _has_image_column(content: bytes) -> bool:
    try:
        schema = pq.ParquetFile(io.BytesIO(content)).schema_arrow
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return False  # the table reader reports the corruption
    return any(_image_like(field.type) for field in schema)


def _read_parquet(content: bytes, max_bytes: int) -> ImageDataset:
    try:
        file = pq.ParquetFile(io.BytesIO(content))
        unpacked = sum(file.metadata.row_group(i).total_byte_size for i in range(file.metadata.num_row_groups))
        if unpacked > max_bytes:
            raise PayloadTooLarge(f"the Parquet file unpacks to {unpacked:,} bytes; at most {max_bytes:,} are accepted")
        table = file.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _invalid(f"the Parquet file cannot be read: {parquet_failure(exc)}") from None
    image_columns = [field.name for field in table.schema if _image_like(field.type)]
    if len(image_columns) != 1:
        raise _invalid(f"the Parquet file has several image-like columns {image_columns}; keep exactly one")
    image_name = image_columns[0]
    others = [name for name in table.column_names if name != image_name]
    label_name = next((n for n in others if n.lower() in LABEL_COLUMNS), others[0] if len(others) == 1 else None)
    if label_name is None:
        raise _invalid(
            f"the Parquet file has image column '{image_name}' but no label column among {others}; "
            "name the class column 'label'"
        )
    labels = table.column(label_name).to_pylist()
    missing = [i for i, value in enumerate(labels) if value is None]
    if missing:
        raise _invalid(f"label column '{label_name}' is empty in row {missing[0]}; every image needs a label")
    if any(isinstance(v, float) and not float(v).is_integer() for v in labels):
        raise _invalid(f"label column '{label_name}' holds fractional numbers; labels must be names or integers")
    labels = [int(v) if isinstance(v, float) else v for v in labels]
    if any(not isinstance(v, str | int) for v in labels):  # a struct or a date is no class name
        raise _invalid(
            f"label column '{label_name}' holds {table.schema.field(label_name).type} values; labels must be "
            "class names or integers"
        )
    sources = list(_parquet_images(table.column(image_name), image_name))
    if not sources:
        raise _invalid("the Parquet file holds no rows")
    return ImageDataset(sources=sources, labels=labels, names=[f"row {i}" for i in range(len(labels))])


def _parquet_images(column: pa.ChunkedArray, name: str) -> Iterator[PixelSource]:
    binary = not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)
    )
    for row, value in enumerate(column.to_pylist()):
        where = f"row {row}"
        if value is None:
            raise _invalid(f"column '{name}' is empty in row {row}; every row needs an image")
        if binary:
            decode_image(value, where)
            yield bytes(value)
            continue
        try:
            pixels = np.asarray(value) if value and isinstance(value[0], list) else np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):  # ragged rows, or strings in a flat list: numpy raises (was a 500)
            raise _invalid(
                f"{where}: the pixels are not a rectangular array of numbers; store each image as nested lists "
                "[height][width] or [height][width][channels] of 0-255 values"
            ) from None
        if pixels.ndim == 1:
            side = math.isqrt(pixels.size)
            if side * side != pixels.size:
                raise _invalid(
                    f"{where}: a flat pixel list of {pixels.size} values is not a square grayscale image; "
                    "store pixels as nested lists [height][width] or [height][width][channels]"
                )
            pixels = pixels.reshape(side, side)
        yield check_pixel_array(pixels, where, max_pixels=MAX_IMAGE_PIXELS)
