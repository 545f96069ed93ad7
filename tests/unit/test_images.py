"""Image dataset uploads: zips of class folders, NPZ and Parquet, and every bad archive refused with a 4xx."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from maas.data.archives import declared_member_count, read_zip_members
from maas.data.images import ImageUploadProfile, inspect_image_upload, load_image_dataset, preview_images
from maas.errors import InvalidInput, PayloadTooLarge

LIMITS: dict[str, Any] = {"max_members": 1000, "max_unpacked_bytes": 10 * 1024 * 1024}


def png(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format)
    return buffer.getvalue()


def image_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def class_members(prefix: str = "", per_class: int = 3, size: tuple[int, int] = (8, 8)) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        f"{prefix}{label}/{i}.png": png(rng.integers(0, 256, size=size))
        for label in ("cat", "dog")
        for i in range(per_class)
    }


def inspect(content: bytes, filename: str = "data.zip") -> ImageUploadProfile:
    profile = inspect_image_upload(content, filename, **LIMITS)
    assert profile is not None
    return profile


def refused(content: bytes, filename: str = "data.zip", **limits: int) -> str:
    with pytest.raises(InvalidInput) as caught:
        inspect_image_upload(content, filename, **{**LIMITS, **limits})
    return caught.value.detail


# --- good uploads ---------------------------------------------------------------------------------------


def test_zip_of_class_folders_is_profiled_with_size_channels_and_class_counts() -> None:
    members = class_members("pets/") | {"__MACOSX/pets/._cat": b"junk", "pets/.DS_Store": b"junk"}
    profile = inspect(image_zip(members))
    assert profile.format == "image-zip" and profile.row_count == 6
    image, label = profile.columns
    assert (image["type"], image["height"], image["width"], image["channels"]) == ("image", 8, 8, 1)
    assert (label["name"], label["type"], label["unique"], label["missing"]) == ("label", "categorical", 2, 0)
    assert label["counts"] == label["stats"]["counts"] == {"cat": 3, "dog": 3}
    assert image["stats"]["height"] == 8


def test_colour_and_mixed_sizes_profile_the_most_common_size_and_three_channels() -> None:
    members = class_members(size=(10, 12))
    members["dog/colour.jpg"] = png(np.full((20, 20, 3), 90), "JPEG")
    image = inspect(image_zip(members)).columns[0]
    assert (image["height"], image["width"], image["channels"]) == (10, 12, 3)
    assert image["sizes"] == {"10x12": 6, "20x20": 1}


def test_preview_lists_images_without_pixels() -> None:
    content = image_zip(class_members())
    columns, rows = preview_images(content, "image-zip", 2)
    assert columns == ["index", "source", "label", "height", "width", "channels"]
    assert rows[0] == [0, "member 'cat/0.png'", "cat", 8, 8, 1] and len(rows) == 2


def test_npz_with_x_and_y_arrays_and_channels_last() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((10, 6, 5, 3), dtype=np.uint8), y=np.array([0, 1] * 5))
    profile = inspect(buffer.getvalue(), "d.npz")
    assert profile.format == "npz" and profile.row_count == 10
    assert profile.columns[0]["height"] == 6 and profile.columns[0]["channels"] == 3
    dataset = load_image_dataset(buffer.getvalue(), "npz")
    assert dataset.labels[:2] == [0, 1] and dataset.converted(4, 4, 1).shape == (10, 1, 4, 4)


def test_npz_of_flat_square_rows_and_string_labels() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.full((4, 784), 255.0), labels=np.array(["a", "b", "a", "b"]))
    profile = inspect(buffer.getvalue(), "d.npz")
    assert (profile.columns[0]["height"], profile.columns[0]["width"]) == (28, 28)
    assert profile.columns[1]["counts"] == {"a": 2, "b": 2}


def test_parquet_with_png_bytes_or_nested_pixel_lists() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"image": [png(rng.integers(0, 256, (5, 5))) for _ in range(4)], "label": [1, 2, 1, 2]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert inspect(buffer.getvalue(), "d.parquet").format == "image-parquet"
    nested = pd.DataFrame({"pixels": [np.full((3, 4), 7).tolist()] * 4, "class": ["x", "y", "x", "y"]})
    buffer = io.BytesIO()
    nested.to_parquet(buffer)
    profile = inspect(buffer.getvalue(), "d.parquet")
    assert (profile.columns[0]["height"], profile.columns[0]["width"]) == (3, 4)


def _parquet(columns: dict[str, list[Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("images", "words"),
    [
        ([[[1, 2], [3]], [[1, 2], [3, 4]]], "row 0: the pixels are not a rectangular array of numbers"),
        ([["a", "b", "c", "d"], ["a", "b", "c", "d"]], "row 0: the pixels are not a rectangular array of numbers"),
    ],
)
def test_parquet_pixel_lists_numpy_cannot_stack_are_named(images: list[Any], words: str) -> None:
    # numpy raised ValueError on ragged rows and on strings in a flat list: a 500 on upload
    assert words in refused(_parquet({"image": images, "label": ["a", "b"]}), "d.parquet")


def test_parquet_struct_labels_are_refused() -> None:
    # a struct label was accepted as a class and stringified
    content = _parquet({"image": [png(np.zeros((4, 4))), png(np.ones((4, 4)))], "label": [{"a": 1}, {"a": 2}]})
    assert "labels must be class names or integers" in refused(content, "d.parquet")


def test_parquet_png_column_converts_like_the_same_pixels_in_an_npz() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (6, 5, 7)).astype(np.uint8)
    labels = ["a", "b"] * 3
    buffer = io.BytesIO()
    pd.DataFrame({"image": [png(p) for p in pixels], "label": labels}).to_parquet(buffer)
    from_parquet = load_image_dataset(buffer.getvalue(), "image-parquet")
    buffer = io.BytesIO()
    np.savez(buffer, x=pixels, y=np.array(labels))
    from_npz = load_image_dataset(buffer.getvalue(), "npz")
    assert from_parquet.labels == from_npz.labels == labels
    assert np.array_equal(from_parquet.converted(5, 7, 1), from_npz.converted(5, 7, 1))
    assert np.array_equal(from_npz.converted(5, 7, 1)[:, 0], pixels)


def test_tables_are_not_image_datasets() -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(buffer)
    assert inspect_image_upload(buffer.getvalue(), "t.parquet", **LIMITS) is None
    assert inspect_image_upload(b"a,b\n1,2\n", "t.csv", **LIMITS) is None


# --- bad archives ---------------------------------------------------------------------------------------


def test_files_outside_class_folders_are_refused() -> None:
    assert "not inside a class folder" in refused(image_zip({"a.png": png(np.zeros((4, 4))), **class_members()}))


def test_one_class_only_is_refused() -> None:
    members = {name: data for name, data in class_members().items() if name.startswith("cat/")}
    assert "only one class ('cat')" in refused(image_zip(members))


def test_non_image_member_is_named() -> None:
    detail = refused(image_zip(class_members() | {"dog/notes.txt": b"hello"}))
    assert "'dog/notes.txt' is not an image" in detail


def test_corrupt_and_truncated_images_are_named() -> None:
    good = png(np.zeros((16, 16)))
    assert "'cat/bad.png': not a readable PNG or JPEG" in refused(image_zip(class_members() | {"cat/bad.png": b"nope"}))
    detail = refused(image_zip(class_members() | {"cat/cut.png": good[: len(good) // 2]}))
    assert "cat/cut.png" in detail


def test_zip_slip_and_absolute_names_are_refused() -> None:
    assert "climbs out" in refused(image_zip(class_members() | {"cat/../../evil.png": png(np.zeros((4, 4)))}))
    assert "absolute path" in refused(image_zip(class_members() | {"/etc/cat/evil.png": png(np.zeros((4, 4)))}))
    assert "climbs out" in refused(image_zip(class_members() | {"..\\evil.png": png(np.zeros((4, 4)))}))


def test_symlink_member_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in class_members().items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("cat/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert "symbolic link" in refused(buffer.getvalue())


def test_encrypted_member_is_refused() -> None:
    content = bytearray(image_zip(class_members()))
    # set the "encrypted" flag in the first central directory entry (offset 8 of a PK\x01\x02 record)
    at = content.find(b"PK\x01\x02")
    content[at + 8] |= 0x1
    assert "encrypted" in refused(bytes(content))


def test_decompression_bomb_is_stopped_by_the_unpacked_size_limit() -> None:
    bomb = image_zip(class_members() | {"cat/zeros.png": b"\0" * 5_000_000})
    assert len(bomb) < 20_000
    with pytest.raises(PayloadTooLarge, match="unpack"):
        inspect_image_upload(bomb, "bomb.zip", max_members=1000, max_unpacked_bytes=1_000_000)


def test_lying_size_header_does_not_get_past_the_byte_count() -> None:
    members = class_members() | {"cat/zeros.png": b"\0" * 3_000_000}
    content = bytearray(image_zip(members))
    # shrink the declared size of the bomb in the central directory: the reader must still stop or fail
    entry = content.find(b"PK\x01\x02", content.find(b"cat/zeros.png") + 1)
    while content[entry + 46 : entry + 46 + 13] != b"cat/zeros.png":
        entry = content.find(b"PK\x01\x02", entry + 1)
    struct.pack_into("<I", content, entry + 24, 10)
    with pytest.raises(InvalidInput):
        inspect_image_upload(bytes(content), "bomb.zip", max_members=1000, max_unpacked_bytes=1_000_000)


def test_too_many_members_is_refused_before_reading_the_directory() -> None:
    content = image_zip({f"c{i % 2}/{i}.png": b"" for i in range(50)}, compression=zipfile.ZIP_STORED)
    assert declared_member_count(content) == 50
    with pytest.raises(PayloadTooLarge, match="50 members"):
        inspect_image_upload(content, "many.zip", max_members=20, max_unpacked_bytes=10**6)


def test_huge_declared_image_dimensions_are_refused_without_decoding() -> None:
    data = bytearray(png(np.zeros((4, 4))))
    struct.pack_into(">II", data, 16, 100_000, 100_000)  # IHDR width/height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image_upload(image_zip(class_members() | {"cat/huge.png": bytes(data)}), "d.zip", **LIMITS)


def test_nested_folders_and_duplicates_are_refused() -> None:
    assert "nested below its class folder" in refused(
        image_zip(class_members("top/") | {"top/cat/deeper/x.png": png(np.zeros((4, 4)))})
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        for name, data in class_members().items():
            archive.writestr(name, data)
        archive.writestr("cat/0.png", png(np.zeros((4, 4))))
    assert "appears twice" in refused(buffer.getvalue())


def test_not_a_zip_named_zip_and_lone_npy_are_explained() -> None:
    assert "not one" in refused(b"hello", "data.zip")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 2)))
    assert "numpy.savez" in refused(buffer.getvalue(), "x.npy")


def test_npz_with_pickled_objects_or_bad_shapes_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((2, 4, 4)), y=np.array([{"a": 1}, {"b": 2}], dtype=object))
    assert "never loaded" in refused(buffer.getvalue(), "d.npz")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((3, 5)), y=np.array([0, 1, 0]))
    assert "square grayscale" in refused(buffer.getvalue(), "d.npz")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.full((2, 4, 4), 300.0), y=np.array([0, 1]))
    assert "from 0 to 255" in refused(buffer.getvalue(), "d.npz")


def test_reader_returns_members_sorted_and_skips_hidden_files() -> None:
    content = image_zip({"b/2.png": b"2", "a/1.png": b"1", "a/.hidden": b"h", "Thumbs.db": b"t"})
    assert read_zip_members(content, max_members=10, max_unpacked_bytes=100) == [("a/1.png", b"1"), ("b/2.png", b"2")]
