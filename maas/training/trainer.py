"""A generic supervised trainer over whole-dataset tensors (small tables need no DataLoader).

It owns the optimizer, L1/L2 regularisation, early stopping with best-weights restore, per-epoch atomic
checkpoints (resumed transparently) and cancellation. Each epoch is reproducible on its own: the shuffle
and the dropout RNG are seeded from ``(seed, epoch)``, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from maas.errors import InvalidInput
from maas.training.checkpoints import BackgroundCheckpointWriter, TrainerState, load_checkpoint

_EVAL_CHUNK_ROWS = 1024
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Applied to each training batch's features (augmentation); the generator is seeded per epoch.
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TrainingCancelled(Exception):
    """``should_stop()`` returned True; the last finished epoch's checkpoint is kept for a resume."""


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "adamw", "sgd"]
    learning_rate: float
    momentum: float = 0.9
    l1: float = 0.0
    l2: float = 0.0
    patience: int = 0
    seed: int = 0
    stop_check_every: int = 8


@dataclass(frozen=True)
class EpochStats:
    """What the trainer knows after an epoch. ``train_outputs`` are the model outputs seen while training
    (in train mode), in the rows' original order; ``val_outputs`` come from eval mode."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    train_outputs: torch.Tensor
    val_outputs: torch.Tensor | None
    elapsed_seconds: float
    eta_seconds: float


@dataclass(frozen=True)
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val_loss: float | None
    stopped_early: bool
    resumed_from_epoch: int
    elapsed_seconds: float


def build_optimizer(parameters: Any, config: TrainerConfig) -> torch.optim.Optimizer:
    """L2 is the optimizer's weight decay (decoupled for adamw)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.l2)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.l2)
    return torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.l2)


def fingerprint(*parts: Any) -> str:
    """A stable digest of JSON-able parts, stored in checkpoints to refuse resuming another run's state."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Trainer:
    """``fit`` trains ``model`` in place and leaves it holding the best (or last) weights, in eval mode."""

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, config: TrainerConfig, *, transform: BatchTransform | None = None
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.config = config
        self.transform = transform
        self.optimizer = build_optimizer(model.parameters(), config)
        self._penalised = [p for p in model.parameters() if p.dim() > 1]

    def _fingerprint(self, run_key: str) -> str:
        shapes = {name: list(p.shape) for name, p in self.model.state_dict().items()}
        return fingerprint(run_key, self.config, shapes)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(outputs, targets)
        if self.config.l1 > 0:
            loss = loss + self.config.l1 * sum(p.abs().sum() for p in self._penalised)
        return loss

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.model.state_dict().items()}

    def _restore(self, checkpoint_dir: Path, key: str) -> tuple[TrainerState, dict[str, torch.Tensor] | None]:
        checkpoint = load_checkpoint(checkpoint_dir, fingerprint=key)
        if checkpoint is None:
            return TrainerState(fingerprint=key), None
        self.model.load_state_dict(checkpoint.model)
        optimizer_state = self.optimizer.state_dict()
        optimizer_state["state"] = checkpoint.optimizer_state
        self.optimizer.load_state_dict(optimizer_state)
        return checkpoint.state, checkpoint.best

    def _done(self, state: TrainerState) -> bool:
        patience = self.config.patience
        return state.epoch >= self.config.epochs or (patience > 0 and state.bad_epochs >= patience)

    def fit(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        validation: tuple[torch.Tensor, torch.Tensor] | None,
        *,
        checkpoint_dir: Path,
        on_epoch: Callable[[EpochStats], None],
        should_stop: Callable[[], bool],
        run_key: str = "",
    ) -> FitResult:
        """Train, resuming from ``checkpoint_dir`` if it holds a checkpoint of the same run.

        ``run_key`` identifies the data and setup (it is part of the checkpoint fingerprint)."""
        key = self._fingerprint(run_key)
        state, best = self._restore(checkpoint_dir, key)
        resumed_from = state.epoch
        session_seconds = 0.0
        writer = BackgroundCheckpointWriter(checkpoint_dir)
        try:
            with torch.random.fork_rng(devices=[]):
                while not self._done(state):
                    if should_stop():
                        raise TrainingCancelled(f"cancelled before epoch {state.epoch + 1}")
                    started = time.monotonic()
                    train_loss, train_outputs = self._train_epoch(train, state.epoch, should_stop)
                    if not math.isfinite(train_loss):
                        raise InvalidInput(
                            f"training diverged in epoch {state.epoch + 1}: the loss became {train_loss}; "
                            "lower learning_rate (or l1/l2), or standardise extreme target values",
                            errors=[{"loc": ["hyperparameters", "learning_rate"], "msg": "training diverged"}],
                        )
                    val_loss, val_outputs = self._evaluate(validation)
                    state.epoch += 1
                    best = self._track_best(state, val_loss, best)
                    epoch_seconds = time.monotonic() - started
                    state.elapsed_seconds += epoch_seconds
                    state.history.append({"epoch": state.epoch, "train_loss": train_loss, "val_loss": val_loss})
                    session_seconds += epoch_seconds
                    per_epoch = session_seconds / (state.epoch - resumed_from)
                    on_epoch(
                        EpochStats(
                            epoch=state.epoch,
                            epochs=self.config.epochs,
                            train_loss=train_loss,
                            val_loss=val_loss,
                            train_outputs=train_outputs,
                            val_outputs=val_outputs,
                            elapsed_seconds=state.elapsed_seconds,
                            eta_seconds=per_epoch * (self.config.epochs - state.epoch),
                        )
                    )
                    # After the epoch's event: a worker killed in between then redoes this epoch (its event
                    # already told), instead of resuming past an epoch no event ever reported.
                    writer.save(
                        state=state,
                        model=self.model.state_dict(),
                        best=best,
                        optimizer_state=self.optimizer.state_dict()["state"],
                    )
        finally:
            writer.close()  # the last epoch's checkpoint is on disk before fit returns or raises
        if best is not None:
            self.model.load_state_dict(best)
        self.model.eval()
        return FitResult(
            epochs_run=state.epoch,
            best_epoch=state.best_epoch or state.epoch,
            best_val_loss=state.best_val_loss,
            stopped_early=state.epoch < self.config.epochs,
            resumed_from_epoch=resumed_from,
            elapsed_seconds=state.elapsed_seconds,
        )

    def _track_best(
        self, state: TrainerState, val_loss: float | None, best: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor] | None:
        if val_loss is None or self.config.patience == 0:
            return None
        if state.best_val_loss is None or val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            state.best_epoch = state.epoch
            state.bad_epochs = 0
            return self._snapshot()
        state.bad_epochs += 1
        return best

    def _train_epoch(
        self, train: tuple[torch.Tensor, torch.Tensor], epoch: int, should_stop: Callable[[], bool]
    ) -> tuple[float, torch.Tensor]:
        features, targets = train
        n = features.shape[0]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        torch.manual_seed(self.config.seed * 7_919 + epoch)  # dropout; inside fork_rng
        order = torch.randperm(n, generator=generator)
        self.model.train()
        total = 0.0
        outputs: list[torch.Tensor] = []
        for step, start in enumerate(range(0, n, self.config.batch_size)):
            if step and step % self.config.stop_check_every == 0 and should_stop():
                raise TrainingCancelled(f"cancelled during epoch {epoch + 1}")
            index = order[start : start + self.config.batch_size]
            batch = features[index]
            if self.transform is not None:
                batch = self.transform(batch, generator)
            batch_out = self.model(batch)
            loss = self._loss(batch_out, targets[index])
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            self.optimizer.step()
            total += float(loss.detach()) * len(index)
            outputs.append(batch_out.detach())
        ordered = torch.empty_like(torch.cat(outputs))
        ordered[order] = torch.cat(outputs)
        return total / max(n, 1), ordered

    @torch.no_grad()
    def _evaluate(
        self, validation: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[float | None, torch.Tensor | None]:
        if validation is None or validation[0].shape[0] == 0:
            return None, None
        self.model.eval()
        # In chunks: one forward pass over thousands of images would hold gigabytes of activations.
        chunk = max(self.config.batch_size, _EVAL_CHUNK_ROWS)
        features, targets = validation
        outputs = torch.cat([self.model(features[start : start + chunk]) for start in range(0, len(features), chunk)])
        return float(self.loss_fn(outputs, targets)), outputs

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        out: torch.Tensor = self.model(features)
        return out
