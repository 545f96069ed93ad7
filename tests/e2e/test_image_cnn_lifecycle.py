"""image-cnn over HTTP: upload a zip of PNG class folders, train, deploy, predict; bad archives are 4xx."""

from __future__ import annotations

import base64
import io
import stat
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from maas.client import Client, MaasAPIError
from tests.harness import LiveServer, new_tenant


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def build_zip(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "../../../../etc/passwd")
    return buffer.getvalue()


def bomb_zip(members: dict[str, bytes]) -> bytes:
    """Over 1 GiB of zeros (the server's default unpacked limit) in about 1 MB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with archive.open("3/bomb.png", "w", force_zip64=True) as stream:
            zeros = bytes(1 << 24)
            for _ in range(66):
                stream.write(zeros)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, dict[str, bytes]]:
    data = load_digits()
    pixels = np.rint(data.images[:300] * (255 / 16)).astype(np.uint8)
    labels = data.target[:300]
    members = {
        f"digits/{label}/{i:03d}.png": png(image) for i, (image, label) in enumerate(zip(pixels, labels, strict=True))
    }
    return pixels, labels, members


@pytest.fixture(scope="module")
def trained(server: LiveServer, digits: tuple[np.ndarray, np.ndarray, dict[str, bytes]]) -> dict[str, Any]:
    tenant = new_tenant(server, "images")
    client = server.client(tenant["key"])
    content = build_zip(digits[2] | {"__MACOSX/digits/._0": b"junk", "digits/.DS_Store": b"junk"})
    assert len(content) < 1024 * 1024
    dataset = client.upload_dataset_bytes(content, "digits.zip", name="digits")
    job = client.train(dataset["id"], family="image-cnn", model_name="digits", hyperparameters={"epochs": 12})
    finished = client.wait_for_job(job["id"], timeout=300)
    assert finished["state"] == "succeeded", finished
    return {"client": client, "dataset": dataset, "job": finished}


def test_upload_profiles_images_and_previews_without_pixels(trained: dict[str, Any]) -> None:
    client: Client = trained["client"]
    dataset = trained["dataset"]
    assert dataset["row_count"] == 300
    columns = {column["name"]: column for column in dataset["columns"]}
    image = columns["image"]["stats"]
    assert (columns["image"]["type"], image["height"], image["width"], image["channels"]) == ("image", 8, 8, 1)
    assert columns["label"]["unique"] == 10 and sum(columns["label"]["stats"]["counts"].values()) == 300
    preview = client.preview_dataset(dataset["id"], rows=3)
    assert preview["columns"] == ["index", "source", "label", "height", "width", "channels"]
    assert preview["rows"][0] == [0, "member 'digits/0/000.png'", "0", 8, 8, 1]


def test_family_is_listed_and_misuse_is_refused_at_submit(trained: dict[str, Any]) -> None:
    client: Client = trained["client"]
    assert "image-cnn" in {family["name"] for family in client.families()}
    with pytest.raises(MaasAPIError) as caught:
        client.train(trained["dataset"]["id"], "label", family="tabular-mlp", model_name="wrong")
    assert caught.value.status == 422
    table = client.upload_dataset_bytes(b"a,b\n1,x\n2,y\n3,x\n4,y\n", "t.csv", name="table")
    with pytest.raises(MaasAPIError) as caught:
        client.train(table["id"], "b", family="image-cnn", model_name="wrong")
    assert caught.value.status == 422 and "zip" in caught.value.problem["detail"]


def test_version_records_test_metrics_with_top_k_and_the_input_signature(trained: dict[str, Any]) -> None:
    client: Client = trained["client"]
    version = client.get_model_version("digits", trained["job"]["result"]["version"])
    assert version["metrics"]["accuracy"] >= 0.85
    assert version["metrics"]["top_3_accuracy"] >= version["metrics"]["accuracy"]
    assert version["signature"]["image_size"] == [8, 8] and version["signature"]["channels"] == 1


def test_predict_base64_png_and_raw_pixel_arrays(
    trained: dict[str, Any], digits: tuple[np.ndarray, np.ndarray, dict[str, bytes]]
) -> None:
    client: Client = trained["client"]
    pixels, labels, _ = digits
    client.create_endpoint("digits", "digits", alias="latest")
    encoded = [base64.b64encode(png(image)).decode() for image in pixels[:20]]
    answer = client.predict("digits", encoded, parameters={"top_k": 3})
    assert answer["model"] == "digits" and len(answer["predictions"]) == 20
    assert sum(p == str(t) for p, t in zip(answer["predictions"], labels[:20], strict=True)) >= 17
    assert all(len(top) == 3 for top in answer["top_k"])
    assert abs(sum(answer["probabilities"][0].values()) - 1) < 1e-4
    raw = client.predict("digits", [pixels[0].tolist(), {"image": pixels[1].tolist()}])
    assert raw["predictions"] == answer["predictions"][:2] and len(raw["top_k"][0]) == 5


def test_predict_bad_instances_are_422_naming_the_instance(trained: dict[str, Any]) -> None:
    client: Client = trained["client"]
    for instances, parameters, expected in [
        ([[[0] * 8] * 8, "%%%"], {}, "instances[1]"),
        ([{"url": "x"}], {}, '"b64" or "image"'),
        ([[[0] * 8] * 8], {"top_k": 0}, "top_k"),
        ([[[999] * 8] * 8], {}, "0 to 255"),
    ]:
        with pytest.raises(MaasAPIError) as caught:
            client.predict("digits", instances, parameters=parameters)
        assert caught.value.status == 422 and expected in caught.value.problem["detail"], caught.value.problem


def test_bad_archives_are_4xx_with_a_reason_and_create_no_dataset(
    server: LiveServer, digits: tuple[np.ndarray, np.ndarray, dict[str, bytes]]
) -> None:
    client = server.client(new_tenant(server, "bad-archives")["key"])
    members = dict(list(digits[2].items())[:40])
    good = png(np.zeros((8, 8)))
    cases = {
        "zip slip": (build_zip(members | {"digits/../../evil.png": good}), "climbs out"),
        "absolute": (build_zip(members | {"/tmp/evil/x.png": good}), "absolute path"),
        "symlink": (build_zip(members, link="digits/3/link.png"), "symbolic link"),
        "one class": (build_zip({k: v for k, v in members.items() if "/0/" in k}), "only one class"),
        "no class folders": (build_zip({"a.png": good, "b.png": good}), "class folder"),
        "non-image": (build_zip(members | {"digits/3/readme.txt": b"hi"}), "is not an image"),
        "corrupt": (build_zip(members | {"digits/3/bad.png": good[:30]}), "digits/3/bad.png"),
        "bomb": (bomb_zip(members), "unpack"),
    }
    for case, (content, reason) in cases.items():
        with pytest.raises(MaasAPIError) as caught:
            client.upload_dataset_bytes(content, f"{case}.zip", name=case.replace(" ", "-"))
        assert caught.value.status in (413, 422), (case, caught.value.status)
        assert reason in caught.value.problem["detail"], (case, caught.value.problem)
    assert client.list_datasets() == []
