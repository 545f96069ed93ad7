"""The image-cnn family: hyperparameters, the submit-time plan, a short training run and the ONNX runtime."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from maas.data.images import inspect_image_upload
from maas.errors import InvalidInput
from maas.models import FAMILIES
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.image_cnn import IMAGE_CNN, parse_hyperparameters
from maas.serving.image_runtime import ImageOnnxModel
from maas.serving.servable import ModelIdentity
from maas.training.image_cnn import top_k_accuracy, train_job
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.trainer import TrainingCancelled


def digits_zip(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    digits = load_digits()
    pixels = np.rint(digits.images[:n] * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (image, label) in enumerate(zip(pixels, digits.target[:n], strict=True)):
            encoded = io.BytesIO()
            Image.fromarray(image).save(encoded, "PNG")
            archive.writestr(f"digits/{label}/{i}.png", encoded.getvalue())
    return buffer.getvalue(), pixels, digits.target[:n]


def images_info(classes: int = 10) -> DatasetInfo:
    columns = [
        {"name": "image", "type": "image", "height": 8, "width": 8, "channels": 1},
        {"name": "label", "type": "categorical", "unique": classes},
    ]
    return DatasetInfo(name="digits", kind="images", format="image-zip", row_count=300, columns=columns)


# --- torch-free family ----------------------------------------------------------------------------------


def test_family_is_registered_and_described() -> None:
    assert FAMILIES["image-cnn"] is IMAGE_CNN
    described = IMAGE_CNN.describe()
    assert described["data"] == "images" and described["tasks"] == ["classification"]
    assert "conv_blocks" in described["hyperparameters"]["properties"]


def test_torch_free_modules_do_not_import_torch() -> None:
    code = (
        "import sys, maas.models, maas.data.images, maas.serving.image_runtime; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hyperparameters_defaults_and_bounds() -> None:
    hp = parse_hyperparameters({"image_size": 16})
    assert hp.image_size == [16, 16] and len(hp.conv_blocks) == 2
    with pytest.raises(InvalidInput, match="kernel_size must be odd"):
        parse_hyperparameters({"conv_blocks": [{"filters": 8, "kernel_size": 4}]})
    with pytest.raises(InvalidInput, match="image_size"):
        parse_hyperparameters({"image_size": [2, 1000]})
    with pytest.raises(InvalidInput, match="pooling blocks shrink 8 x 8"):
        parse_hyperparameters({"image_size": 8, "conv_blocks": [{"filters": 4}] * 4})
    with pytest.raises(InvalidInput, match="unknown_knob"):
        parse_hyperparameters({"unknown_knob": 1})


def test_plan_settles_label_target_and_records_size() -> None:
    plan = IMAGE_CNN.plan(images_info(), PlanRequest(target=None, task=None))
    assert (plan.task, plan.target) == ("classification", "label")
    assert plan.extra == {"image_size": [8, 8], "channels": 1, "classes": 10}


def test_plan_shrinks_large_images_by_default_keeping_the_aspect() -> None:
    info = images_info()
    info.columns[0].update(height=480, width=640, channels=3)
    plan = IMAGE_CNN.plan(info, PlanRequest(target="label", task="classification"))
    assert plan.extra["image_size"] == [48, 64] and plan.extra["channels"] == 3


def test_plan_refuses_tables_other_targets_and_regression() -> None:
    table = DatasetInfo(name="t", kind="tabular", format="csv", row_count=3, columns=[{"name": "a"}])
    with pytest.raises(InvalidInput, match="Upload a zip with one folder of PNG/JPEG images per class"):
        IMAGE_CNN.plan(table, PlanRequest(target="a", task=None))
    with pytest.raises(InvalidInput, match="target is 'label'"):
        IMAGE_CNN.plan(images_info(), PlanRequest(target="pixels", task=None))
    with pytest.raises(InvalidInput, match="only does classification"):
        IMAGE_CNN.plan(images_info(), PlanRequest(target=None, task="regression"))
    with pytest.raises(InvalidInput, match="at least 2"):
        IMAGE_CNN.plan(images_info(classes=1), PlanRequest(target=None, task=None))


def test_top_k_accuracy() -> None:
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert top_k_accuracy(probabilities, np.array([1, 1]), 1) == 0.0
    assert top_k_accuracy(probabilities, np.array([1, 1]), 2) == 1.0


# --- training and serving -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedModel, list[EpochReport], np.ndarray, np.ndarray]:
    content, pixels, labels = digits_zip(400)
    profile = inspect_image_upload(content, "digits.zip", max_members=1000, max_unpacked_bytes=10**8)
    assert profile is not None
    info = DatasetInfo("digits", "images", profile.format, profile.row_count, profile.columns)
    plan = IMAGE_CNN.plan(info, PlanRequest(target=None, task=None))
    spec: dict[str, Any] = {"hyperparameters": {"epochs": 8, "augmentation": True}, "plan": plan.extra}
    reports: list[EpochReport] = []
    model = train_job(
        TrainingData("images", profile.format, content),
        spec,
        tmp_path_factory.mktemp("ckpt"),
        reports.append,
        lambda: False,
    )
    return model, reports, pixels, labels


def test_training_reports_epochs_and_test_metrics_with_top_k(trained: Any) -> None:
    model, reports, _, _ = trained
    assert len(reports) == model.epochs_run and reports[-1].val_metrics["accuracy"] > 0.5
    assert model.metrics["accuracy"] >= 0.85  # 8 epochs on 320 images
    assert model.metrics["top_3_accuracy"] >= model.metrics["accuracy"]
    assert model.metrics["top_5_accuracy"] >= model.metrics["top_3_accuracy"]
    assert model.signature["image_size"] == [8, 8] and model.signature["channels"] == 1
    assert model.hyperparameters["augmentation"] is True and model.artifact_format == "onnx"


def test_onnx_takes_raw_pixels_nchw_and_outputs_probabilities(trained: Any) -> None:
    model, _, pixels, _ = trained
    session = ort.InferenceSession(model.artifact, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 8, 8]
    (out,) = session.run(None, {"features": pixels[:3, None].astype(np.float32)})
    assert out.shape == (3, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-5)


def runtime(model: TrainedModel) -> ImageOnnxModel:
    return ImageOnnxModel(ModelIdentity("mv_1", "digits", 1), model.artifact, model.preprocessing, model.signature)


def test_runtime_predicts_base64_png_and_pixel_arrays_alike(trained: Any) -> None:
    model, _, pixels, labels = trained
    served = runtime(model)
    buffer = io.BytesIO()
    Image.fromarray(pixels[0]).save(buffer, "PNG")
    instances = [base64.b64encode(buffer.getvalue()).decode(), pixels[0].tolist(), {"image": pixels[1].tolist()}]
    answer = served.decode(served.run(served.encode(instances, {"top_k": 2})), {"top_k": 2})
    assert answer["predictions"][0] == answer["predictions"][1]
    assert answer["probabilities"][0] == pytest.approx(answer["probabilities"][1])
    assert [len(top) for top in answer["top_k"]] == [2, 2, 2]
    assert answer["top_k"][0][0]["label"] == answer["predictions"][0]
    many = served.encode([image.tolist() for image in pixels[:60]], {})
    predicted = served.decode(served.run(many), {})["predictions"]
    assert np.mean(np.array(predicted) == labels[:60].astype(str)) >= 0.85
    assert len(served.decode(served.run(many[:1]), {})["top_k"][0]) == 5


def test_runtime_resizes_larger_colour_images(trained: Any) -> None:
    served = runtime(trained[0])
    big = np.repeat(np.repeat(trained[2][0], 4, axis=0), 4, axis=1)
    colour = np.stack([big] * 3, axis=2).tolist()
    assert served.encode([colour], {}).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    ("instance", "parameters", "message"),
    [
        (42, {}, r"instances\[0\]: expected a base64"),
        ("@@@", {}, r"instances\[0\]: not valid base64"),
        (base64.b64encode(b"not an image").decode(), {}, r"instances\[0\]: not a readable PNG"),
        ([[1, 2], [3]], {}, "different lengths"),
        ([[0] * 8] * 8, {"top_k": 11}, "top_k must be an integer from 1 to 10"),
        ({"url": "http://x"}, {}, '"b64" or "image"'),
        ({"b64": "", "image": []}, {}, '"b64" or "image"'),
    ],
)
def test_runtime_bad_instances_name_what_to_fix(
    trained: Any, instance: Any, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        runtime(trained[0]).encode([instance], parameters)


def test_cancelled_job_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    content, _, _ = digits_zip(200)
    data = TrainingData("images", "image-zip", content)
    spec: dict[str, Any] = {"hyperparameters": {"epochs": 4, "early_stopping_patience": 0}}
    seen: list[int] = []
    with pytest.raises(TrainingCancelled):
        train_job(data, spec, tmp_path, lambda r: seen.append(r.epoch), lambda: len(seen) >= 2)
    model = train_job(data, spec, tmp_path, lambda r: seen.append(r.epoch), lambda: False)
    assert seen == [1, 2, 3, 4] and model.epochs_run == 4


def test_training_refuses_tabular_data(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="image datasets"):
        train_job(TrainingData("tabular", "csv", b"a,b\n1,2\n"), {}, tmp_path, lambda r: None, lambda: False)
