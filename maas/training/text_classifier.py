"""Train a ``text-classifier`` model: clean the rows, split, fit a tokenizer on the training split, train
through the generic :class:`~maas.training.trainer.Trainer`, evaluate on the test split, export to ONNX.

Rows: a row without a label, or whose text is missing or only whitespace, is dropped and counted in the
metrics (``dropped_rows``); a text over :data:`maas.data.text.MAX_TEXT_CHARS` fails the job with the row
named, since a megabyte cell is a broken file rather than a text.

The ONNX graph takes ``token_ids`` (int64 ``[batch, max_length]``, padded with 0) and returns
``probabilities``; the serving runtime tokenises with the tokenizer stored in ``preprocessing``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import nn

from maas.data.labels import LabelEncoder
from maas.data.text import MAX_TEXT_CHARS
from maas.errors import InvalidInput
from maas.models.text_classifier import MAX_CLASSES, TextClassifierHyperparameters
from maas.models.text_classifier_net import (
    PAD_ID,
    TextNetConfig,
    build_network,
    frequent_bigrams,
    member_loss,
    set_bigrams,
)
from maas.training import metrics
from maas.training.onnx_export import OPSET, PROBABILITIES, ClassifierHead
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.splits import Split, split_indices
from maas.training.trainer import EpochStats, Trainer, TrainerConfig, fingerprint

INPUT_NAME = "token_ids"
PAD_TOKEN = "[PAD]"  # noqa: S105 (a tokenizer's special token, not a secret)
UNK_TOKEN = "[UNK]"  # noqa: S105
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TextRows:
    texts: list[str]
    labels: np.ndarray  # class indices
    encoder: LabelEncoder
    dropped: int
    positions: np.ndarray  # each kept row's position in the frame


def clean_rows(frame: pd.DataFrame, text_column: str, target: str) -> TextRows:
    """Keep rows with a label and a non-blank text; raise InvalidInput for an over-long text."""
    for column, role in ((text_column, "text column"), (target, "target")):
        if column not in frame.columns:
            raise InvalidInput(
                f"{role} '{column}' is not in the dataset (columns: {', '.join(map(str, frame.columns))})"
            )
    texts = frame[text_column]
    present = texts.notna() & frame[target].notna()
    strings = texts.where(texts.isna(), texts.astype(str))
    lengths = strings.str.len().fillna(0)
    too_long = np.flatnonzero(lengths.to_numpy() > MAX_TEXT_CHARS)
    if len(too_long):
        row = int(too_long[0]) + 1
        raise InvalidInput(
            f"row {row}: the text in '{text_column}' has {int(lengths.iloc[too_long[0]])} characters; at most "
            f"{MAX_TEXT_CHARS} are accepted ({len(too_long)} rows are over); split long documents into passages",
            errors=[{"loc": ["dataset", "row", row, text_column], "msg": "text too long"}],
        )
    keep = present & strings.fillna("").str.strip().astype(bool)
    kept = frame.loc[keep]
    if len(kept) < 4:
        raise InvalidInput(f"only {len(kept)} rows have both a text and a label; at least 4 are needed")
    encoder = LabelEncoder.fit(kept[target].tolist())
    if len(encoder.classes) < 2:
        raise InvalidInput(f"target '{target}' has a single class among the rows with text; at least 2 are needed")
    if len(encoder.classes) > MAX_CLASSES:
        raise InvalidInput(f"target '{target}' has {len(encoder.classes)} classes; at most {MAX_CLASSES}")
    return TextRows(
        texts=strings.loc[keep].tolist(),
        labels=encoder.encode(kept[target].tolist()),
        encoder=encoder,
        dropped=int(len(frame) - len(kept)),
        positions=np.flatnonzero(keep.to_numpy()),
    )


def train_tokenizer(texts: list[str], hp: TextClassifierHyperparameters) -> Tokenizer:
    """A WordPiece/BPE tokenizer fitted on ``texts``; ids 0 and 1 are padding and unknown."""
    if hp.tokenizer == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        trainer: Any = trainers.BpeTrainer(
            vocab_size=hp.vocab_size, special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False
        )
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN))
        trainer = trainers.WordPieceTrainer(
            vocab_size=hp.vocab_size, special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False
        )
    steps: list[Any] = [normalizers.NFKC()] + ([normalizers.Lowercase()] if hp.lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.enable_truncation(hp.max_length)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN, length=hp.max_length)
    assert tokenizer.token_to_id(PAD_TOKEN) == PAD_ID
    return tokenizer


def checkpointed_tokenizer(checkpoint_dir: Path, texts: list[str], hp: TextClassifierHyperparameters) -> Tokenizer:
    """The tokenizer this job trained before, if its checkpoint directory holds one, else a new one (saved
    atomically). The tokenizers library numbers tokens in hash order, so a retrained tokenizer could give
    the same words other ids: a resumed job must reuse the one its checkpoints were trained with."""
    path = checkpoint_dir / TOKENIZER_FILE
    if path.exists():
        return Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tokenizer = train_tokenizer(texts, hp)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(tokenizer.to_str(), encoding="utf-8")
    partial.replace(path)
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids ``[n, max_length]`` (int64); the tokenizer truncates and pads."""
    return np.asarray([encoding.ids for encoding in tokenizer.encode_batch(texts)], dtype=np.int64)


def export_text_onnx(module: nn.Module, max_length: int) -> bytes:
    """Serialise ``module`` (network + softmax head) with a dynamic batch and a fixed length."""
    module.eval()
    example = torch.ones(2, max_length, dtype=torch.int64)
    with tempfile.TemporaryDirectory(prefix="maas-onnx-") as tmp, warnings.catch_warnings():
        path = Path(tmp) / "model.onnx"
        warnings.simplefilter("ignore")  # tracer notes about the RNNs; the export is verified after
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


def run_text_onnx(onnx_bytes: bytes, ids: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {INPUT_NAME: ids})[0])


def _verified_outputs(module: nn.Module, onnx_bytes: bytes, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        expected = module(torch.from_numpy(ids)).numpy()
    actual = run_text_onnx(onnx_bytes, ids)
    if actual.shape != expected.shape or not np.allclose(actual, expected, atol=1e-4, rtol=1e-3):
        raise RuntimeError("the exported ONNX model disagrees with the torch model")
    return actual


def _split(rows: TextRows, hp: TextClassifierHyperparameters, test_rows: np.ndarray | None) -> Split:
    labels = rows.labels
    if test_rows is None:
        split = split_indices(
            len(labels),
            test_fraction=hp.test_split,
            validation_fraction=hp.validation_split,
            seed=hp.seed,
            strata=labels,
        )
    else:  # a fixed test set (a cross-validation fold); validation is cut from the rest
        is_test = np.isin(rows.positions, test_rows)
        rest = np.flatnonzero(~is_test)
        cut = split_indices(
            len(rest), test_fraction=hp.validation_split, validation_fraction=0.0, seed=hp.seed, strata=labels[rest]
        )
        split = Split(train=rest[cut.train], validation=rest[cut.test], test=np.flatnonzero(is_test))
    if len(split.train) < 2 or len(split.test) < 1:
        raise InvalidInput("too few rows to split into training and test sets")
    return split


def net_config(hp: TextClassifierHyperparameters, vocab_size: int, n_classes: int) -> TextNetConfig:
    return TextNetConfig(
        vocab_size=vocab_size,
        n_outputs=n_classes,
        max_length=hp.max_length,
        encoder=hp.encoder,
        embedding_dim=hp.embedding_dim,
        hidden_size=hp.hidden_size,
        num_layers=hp.num_layers,
        bidirectional=hp.bidirectional,
        dropout=hp.dropout,
        token_dropout=hp.token_dropout,
        heads=hp.heads,
        bigrams=hp.bigrams,
        bag=hp.bag,
        bag_dim=hp.bag_dim,
        members=hp.members,
        seed=hp.seed,
    )


def _report(stats: EpochStats, y_train: np.ndarray, y_val: np.ndarray) -> EpochReport:
    def accuracy(outputs: torch.Tensor | None, labels: np.ndarray) -> dict[str, float]:
        if outputs is None or len(labels) == 0:
            return {}
        scores = outputs.detach()
        if scores.dim() == 3:  # an ensemble in training mode: one row of logits per member
            scores = scores.mean(dim=1)
        return {"accuracy": metrics.accuracy(scores.numpy(), labels)}

    return EpochReport(
        epoch=stats.epoch,
        epochs=stats.epochs,
        train_loss=stats.train_loss,
        val_loss=stats.val_loss,
        train_metrics=accuracy(stats.train_outputs, y_train),
        val_metrics=accuracy(stats.val_outputs, y_val),
        progress=stats.epoch / stats.epochs,
        eta_seconds=stats.eta_seconds,
        elapsed_seconds=stats.elapsed_seconds,
    )


def train_text_classifier(
    frame: pd.DataFrame,
    text_column: str,
    target: str,
    hp: TextClassifierHyperparameters,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
    *,
    test_rows: np.ndarray | None = None,
) -> TrainedModel:
    """See the module docstring. Raises InvalidInput for unusable data, TrainingCancelled on request.

    ``test_rows`` (frame positions) fixes the test split, as a cross-validation fold does; by default it is
    a stratified ``test_split`` share of the rows."""
    started = time.monotonic()
    rows = clean_rows(frame, text_column, target)
    split = _split(rows, hp, test_rows)
    tokenizer = checkpointed_tokenizer(checkpoint_dir, [rows.texts[i] for i in split.train], hp)
    ids = encode_texts(tokenizer, rows.texts)
    n_classes = len(rows.encoder.classes)
    config = net_config(hp, tokenizer.get_vocab_size(), n_classes)
    network = build_network(config)
    kept_bigrams = frequent_bigrams(torch.from_numpy(ids[split.train]), hp.bigrams) if hp.bigrams else []
    set_bigrams(network, kept_bigrams)

    trainer = Trainer(
        network,
        member_loss(nn.CrossEntropyLoss()),
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
    )
    all_ids = torch.from_numpy(ids)
    all_labels = torch.from_numpy(rows.labels.astype(np.int64))

    def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.from_numpy(index)
        return all_ids[chosen], all_labels[chosen]

    y_train, y_val = rows.labels[split.train], rows.labels[split.validation]
    fit = trainer.fit(
        tensors(split.train),
        tensors(split.validation) if len(split.validation) else None,
        checkpoint_dir=checkpoint_dir,
        on_epoch=lambda stats: on_epoch(_report(stats, y_train, y_val)),
        should_stop=should_stop,
        run_key=fingerprint("text", target, text_column, tokenizer.to_str(), split.train.tolist(), kept_bigrams),
    )

    module = ClassifierHead(network, single_logit=False).eval()
    onnx_bytes = export_text_onnx(module, hp.max_length)
    outputs = _verified_outputs(module, onnx_bytes, ids[split.test])
    test_metrics = metrics.classification_report(outputs, rows.labels[split.test], rows.encoder.classes)
    test_metrics.update(
        train_rows=len(split.train),
        validation_rows=len(split.validation),
        test_rows=len(split.test),
        dropped_rows=rows.dropped,
        vocab_size=tokenizer.get_vocab_size(),
        bigrams=len(kept_bigrams),
        truncated_texts=int(np.sum(ids[:, -1] != PAD_ID)),
        epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch,
        stopped_early=fit.stopped_early,
        best_val_loss=fit.best_val_loss,
        training_seconds=fit.elapsed_seconds,
        total_seconds=time.monotonic() - started,
    )
    classes = list(rows.encoder.classes)
    signature: dict[str, Any] = {
        "inputs": [{"name": "text", "type": "string", "max_chars": MAX_TEXT_CHARS}],
        "outputs": [{"name": PROBABILITIES, "type": "float32", "shape": [-1, n_classes]}],
        "task": "classification",
        "target": target,
        "text_column": text_column,
        "classes": classes,
        "onnx_input": INPUT_NAME,
        "onnx_input_shape": [-1, hp.max_length],
        "onnx_output": PROBABILITIES,
    }
    preprocessing = {"tokenizer": tokenizer.to_str(), "max_length": hp.max_length, "max_text_chars": MAX_TEXT_CHARS}
    return TrainedModel(
        artifact=onnx_bytes,
        artifact_format="onnx",
        preprocessing=preprocessing,
        signature=signature,
        metrics=test_metrics,
        hyperparameters=hp.model_dump(mode="json"),
        task="classification",
        epochs_run=fit.epochs_run,
    )


def train_job(
    data: TrainingData,
    spec: dict[str, Any],
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedModel:
    """The job entry point (:data:`maas.training.registry.TRAINERS`)."""
    hp = TextClassifierHyperparameters.model_validate(spec["hyperparameters"])
    roles = spec.get("roles") or {}
    if "text" not in roles or not spec.get("target"):
        raise InvalidInput("the job spec names no text column or target; submit the job again")
    return train_text_classifier(data.frame(), roles["text"], spec["target"], hp, checkpoint_dir, on_epoch, should_stop)
