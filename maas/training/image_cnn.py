"""Train an ``image-cnn`` model: read the images, convert, split, train, evaluate, export to ONNX.

Images are converted with :func:`maas.data.image_pixels.conform`, the function the serving runtime applies
to predict inputs, and kept as uint8 tensors (the network normalises inside, so the exported graph takes
0-255 pixels). Augmentation, when asked for, is the trainer's per-batch ``transform``.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional

from maas.data.images import ImageDataset, load_image_dataset, source_shape
from maas.data.labels import LabelEncoder
from maas.errors import InvalidInput
from maas.models.image_cnn import TARGET, ImageCNNHyperparameters, default_image_size, parse_hyperparameters
from maas.models.image_cnn_net import build_network
from maas.training import metrics
from maas.training.onnx_export import INPUT_NAME, OPSET, PROBABILITIES, serving_module
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.splits import Split, split_indices
from maas.training.trainer import EpochStats, Trainer, TrainerConfig, fingerprint

MAX_CLASSES = 1000
MAX_PIXEL_BYTES = 2 * 1024**3  # converted uint8 pixels held in memory while training
_EVAL_BATCH = 256


def _image_shape(dataset: ImageDataset, hp: ImageCNNHyperparameters, plan: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, height, width): the hyperparameters, else the dataset's profile (recorded at submit)."""
    if hp.image_size is not None:
        height, width = hp.image_size
    elif "image_size" in plan:
        height, width = (int(side) for side in plan["image_size"])
    else:
        height, width = default_image_size(*source_shape(dataset.sources[0], dataset.names[0])[:2])
    channels = hp.channels or int(plan.get("channels", 1))
    hp.check_size(height, width)
    return channels, height, width


def _pixels(dataset: ImageDataset, shape: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = shape
    needed = len(dataset) * channels * height * width
    if needed > MAX_PIXEL_BYTES:
        raise InvalidInput(
            f"{len(dataset):,} images of {channels} x {height} x {width} need {needed / 1024**3:.1f} GiB in memory; "
            "choose a smaller image_size (or channels 1)",
            errors=[{"loc": ["hyperparameters", "image_size"], "msg": "too large for memory"}],
        )
    return dataset.converted(height, width, channels)


def _labels(dataset: ImageDataset) -> tuple[LabelEncoder, np.ndarray]:
    encoder = LabelEncoder.fit(dataset.labels)
    if not 2 <= len(encoder.classes) <= MAX_CLASSES:
        raise InvalidInput(
            f"the dataset has {len(encoder.classes)} classes; image-cnn needs between 2 and {MAX_CLASSES}",
            errors=[{"loc": ["target"], "msg": "class count out of range"}],
        )
    return encoder, encoder.encode(dataset.labels)


def _split(labels: np.ndarray, hp: ImageCNNHyperparameters) -> Split:
    split = split_indices(
        len(labels), test_fraction=hp.test_split, validation_fraction=hp.validation_split, seed=hp.seed, strata=labels
    )
    if len(split.train) < 2 or len(split.test) < 1:
        raise InvalidInput("too few images to split into training and test sets; upload more images per class")
    return split


def _channel_stats(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in pixel units (std floored at 1: a blank channel stays finite)."""
    values = pixels.transpose(1, 0, 2, 3).reshape(pixels.shape[1], -1).astype(np.float64)
    return values.mean(axis=1).tolist(), np.maximum(values.std(axis=1), 1.0).tolist()


def augmenter(hp: ImageCNNHyperparameters) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Random shift/rotation (one affine warp per image) and optional horizontal flip, seeded per epoch."""
    max_angle = math.radians(hp.max_rotation)

    def transform(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = batch.float()
        n = images.shape[0]
        angle = (torch.rand(n, generator=generator) * 2 - 1) * max_angle
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * hp.max_shift)  # grid units span 2
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
        warped = functional.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
        if hp.horizontal_flip:
            flip = torch.rand(n, generator=generator) < 0.5
            warped = torch.where(flip[:, None, None, None], warped.flip(-1), warped)
        return warped

    return transform


def export_image_onnx(module: nn.Module, shape: tuple[int, int, int]) -> bytes:
    """ONNX bytes of the serving module: float32 ``[batch, C, H, W]`` 0-255 pixels → class probabilities."""
    module.eval()
    example = torch.zeros(2, *shape, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="maas-onnx-") as tmp, warnings.catch_warnings():
        path = Path(tmp) / "model.onnx"
        # The TorchScript exporter may announce its own deprecation; the result is verified below.
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[INPUT_NAME],
            output_names=[PROBABILITIES],
            dynamic_axes={INPUT_NAME: {0: "batch"}, PROBABILITIES: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        return path.read_bytes()


def verify_image_onnx(module: nn.Module, onnx_bytes: bytes, pixels: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """ONNX Runtime must agree with torch on ``pixels`` (in batches); returns the ONNX probabilities."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = []
    for start in range(0, len(pixels), _EVAL_BATCH):
        batch = np.ascontiguousarray(pixels[start : start + _EVAL_BATCH], dtype=np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(batch)).numpy()
        (actual,) = session.run([PROBABILITIES], {INPUT_NAME: batch})
        if actual.shape != expected.shape or not np.allclose(actual, expected, atol=atol, rtol=1e-4):
            raise RuntimeError("the exported ONNX model disagrees with the torch model")
        outputs.append(np.asarray(actual))
    return np.concatenate(outputs)


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of images whose label is among the ``k`` most probable classes."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def evaluation_report(probabilities: np.ndarray, labels: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """The classification report plus ``top_3``/``top_5`` accuracy (where there are more classes than k)."""
    report = metrics.classification_report(probabilities, labels, classes)
    for k in (3, 5):
        if len(classes) > k:
            report[f"top_{k}_accuracy"] = top_k_accuracy(probabilities, labels, k)
    return report


def _reporter(y_train: np.ndarray, y_val: np.ndarray) -> Callable[[EpochStats], EpochReport]:
    def report(stats: EpochStats) -> EpochReport:
        val = stats.val_outputs
        return EpochReport(
            epoch=stats.epoch,
            epochs=stats.epochs,
            train_loss=stats.train_loss,
            val_loss=stats.val_loss,
            train_metrics={"accuracy": metrics.accuracy(stats.train_outputs.numpy(), y_train)},
            val_metrics={"accuracy": metrics.accuracy(val.numpy(), y_val)} if val is not None and len(y_val) else {},
            progress=stats.epoch / stats.epochs,
            eta_seconds=stats.eta_seconds,
            elapsed_seconds=stats.elapsed_seconds,
        )

    return report


def _signature(shape: tuple[int, int, int], classes: list[Any]) -> dict[str, Any]:
    channels, height, width = shape
    return {
        "inputs": [
            {
                "name": "image",
                "type": "image",
                "height": height,
                "width": width,
                "channels": channels,
                "accepts": [
                    "base64 PNG or JPEG string (any size; converted)",
                    '{"b64": "<base64>"}',
                    "pixel array [height][width] or [height][width][channels], values 0-255",
                ],
            }
        ],
        "outputs": [{"name": PROBABILITIES, "type": "float32", "shape": [-1, len(classes)]}],
        "parameters": {"top_k": f"labels returned per image, 1..{len(classes)} (default {min(5, len(classes))})"},
        "task": "classification",
        "target": TARGET,
        "classes": classes,
        "image_size": [height, width],
        "channels": channels,
        "onnx_input": INPUT_NAME,
        "onnx_input_shape": [-1, channels, height, width],
        "onnx_input_range": [0, 255],
        "onnx_output": PROBABILITIES,
    }


def train_job(
    data: TrainingData,
    spec: dict[str, Any],
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedModel:
    """The trainer contract (:mod:`maas.training.results`) for ``image-cnn``."""
    started = time.monotonic()
    if data.kind != "images":
        raise InvalidInput("image-cnn trains on image datasets: a zip of class folders, or an NPZ/Parquet of pixels")
    hp = parse_hyperparameters(spec.get("hyperparameters"))
    dataset = load_image_dataset(data.content, data.format)
    shape = _image_shape(dataset, hp, spec.get("plan") or {})
    encoder, labels = _labels(dataset)
    pixels = _pixels(dataset, shape)
    split = _split(labels, hp)
    mean, std = _channel_stats(pixels[split.train])

    network = build_network(shape, len(encoder.classes), hp, mean, std)
    trainer = Trainer(
        network,
        nn.CrossEntropyLoss(),
        TrainerConfig(
            epochs=hp.epochs,
            batch_size=hp.batch_size,
            optimizer=hp.optimizer,
            learning_rate=hp.learning_rate,
            momentum=hp.momentum,
            l1=hp.l1,
            l2=hp.l2,
            patience=hp.early_stopping_patience if len(split.validation) else 0,
            seed=hp.seed,
        ),
        transform=augmenter(hp) if hp.augmentation else None,
    )

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(pixels[rows]), torch.from_numpy(labels[rows])

    run_key = fingerprint(
        "image-cnn", shape, encoder.to_json(), split.train.tolist(), int(pixels.sum(dtype=np.int64)), mean, std
    )
    reporter = _reporter(labels[split.train], labels[split.validation])
    fit = trainer.fit(
        tensors(split.train),
        tensors(split.validation) if len(split.validation) else None,
        checkpoint_dir=checkpoint_dir,
        on_epoch=lambda stats: on_epoch(reporter(stats)),
        should_stop=should_stop,
        run_key=run_key,
    )

    module = serving_module(network, "classification")
    onnx_bytes = export_image_onnx(module, shape)
    probabilities = verify_image_onnx(module, onnx_bytes, pixels[split.test])
    test_metrics = evaluation_report(probabilities, labels[split.test], list(encoder.classes))
    test_metrics.update(
        train_rows=len(split.train),
        validation_rows=len(split.validation),
        test_rows=len(split.test),
        class_counts=dict(Counter(str(label) for label in dataset.labels)),
        epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch,
        stopped_early=fit.stopped_early,
        best_val_loss=fit.best_val_loss,
        training_seconds=fit.elapsed_seconds,
        total_seconds=time.monotonic() - started,
    )
    channels, height, width = shape
    return TrainedModel(
        artifact=onnx_bytes,
        artifact_format="onnx",
        preprocessing={"image_size": [height, width], "channels": channels, "resample": "bilinear"},
        signature=_signature(shape, list(encoder.classes)),
        metrics=test_metrics,
        hyperparameters={**hp.model_dump(mode="json"), "image_size": [height, width], "channels": channels},
        task="classification",
        epochs_run=fit.epochs_run,
    )
