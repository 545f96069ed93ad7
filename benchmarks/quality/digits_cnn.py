"""scikit-learn ``load_digits`` (1,797 images of 8x8) through ``image-cnn``, beside the reference figures.

    .venv/bin/python benchmarks/quality/digits_cnn.py

The digits are uploaded the way a user would: a zip with one folder of PNG files per class (pixels 0..16
scaled to 0..255), profiled by the upload check, then trained by the family's trainer (the generic trainer,
ONNX export and verification included) with its default hyperparameters and a stratified 25% test split.
The accuracy printed is ONNX Runtime's on that test split. Bar: >= 0.98. References (75/25 stratified,
random_state=0, in ../shared/research/offline-data-and-models.md): SVC 0.993, kNN 0.987, MLP 0.978.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from maas.data.images import inspect_image_upload
from maas.training.image_cnn import train_job
from maas.training.results import EpochReport, TrainingData

BAR = 0.98
REFERENCES = {"SVC (gamma=0.001, C=10)": 0.993, "kNN (k=3)": 0.987, "MLP (100)": 0.978}


def digits_zip(limit: int | None = None) -> bytes:
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, (image, label) in enumerate(zip(pixels[:limit], digits.target[:limit], strict=True)):
            encoded = io.BytesIO()
            Image.fromarray(image).save(encoded, "PNG")
            archive.writestr(f"digits/{label}/{i:04d}.png", encoded.getvalue())
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=JSON", help="override a default")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {
        name: json.loads(value) for name, _, value in (item.partition("=") for item in args.hp)
    }
    content = digits_zip()
    profile = inspect_image_upload(content, "digits.zip", max_members=100_000, max_unpacked_bytes=2**30)
    assert profile is not None
    plan = {"image_size": [profile.columns[0]["height"], profile.columns[0]["width"]], "channels": 1}
    spec = {"hyperparameters": {"test_split": 0.25, "seed": args.seed, **overrides}, "plan": plan}

    def on_epoch(report: EpochReport) -> None:
        if args.verbose:
            print(f"epoch {report.epoch}: loss {report.train_loss:.4f} val {report.val_metrics}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        model = train_job(TrainingData("images", profile.format, content), spec, Path(tmp), on_epoch, lambda: False)
    seconds = time.monotonic() - started
    metrics = model.metrics
    print(f"digits 8x8, {profile.row_count} images as a {len(content) / 1024:.0f} KiB zip of PNG class folders")
    print(
        f"image-cnn  accuracy {metrics['accuracy']:.4f}  top-3 {metrics['top_3_accuracy']:.4f}  "
        f"({metrics['test_rows']} test images, {model.epochs_run} epochs, {seconds:.1f} s, "
        f"{metrics['training_seconds'] / model.epochs_run:.2f} s/epoch)"
    )
    for name, value in REFERENCES.items():
        print(f"reference  {name:<24} {value:.3f}")
    print(f"bar >= {BAR}: {'PASS' if metrics['accuracy'] >= BAR else 'FAIL'}")


if __name__ == "__main__":
    main()
