"""The ``text-classifier`` family: label short texts (reviews, tickets, messages) from a table.

Torch-free (hyperparameters, column roles, family metadata); the networks are in
:mod:`maas.models.text_classifier_net`, training in :mod:`maas.training.text_classifier`.

A text dataset is a table (CSV, Parquet or JSONL) with a text column and a label column:

- ``target`` names the label column. When it is left out and exactly one column other than the text
  column is not free text, that column is the label; otherwise the request must name it.
- ``columns={"text": "<col>"}`` names the text column. When left out it is the only ``text``-typed column
  besides the target, or else the one named like a text (``text``, ``review``, ``sentence``, ...).

The default architecture is the one that reached the quality bar on Rotten Tomatoes (5-fold CV through
the platform's own training and serving code, ``benchmarks/quality/rotten_tomatoes_text.py``): two
bidirectional GRUs over WordPiece tokens, max- and mean-pooled, each beside a bag of the unigrams and the
50,000 most frequent bigrams, with word dropout, averaged: 0.783 ± 0.007 (one network: 0.779; TF-IDF +
logistic regression: 0.779). A GPU sweep of the same protocol scored the parts alone: BiGRU 0.72 (0.76
with word dropout), BiLSTM 0.73, transformer 0.69-0.71, bag of unigrams 0.77, bag with the frequent
bigrams 0.78; each encoder beside the bag 0.783-0.785 (one seed, so about ±0.005).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from maas.data.text import MAX_TEXT_CHARS
from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, JobPlan, PlanRequest

FAMILY_NAME = "text-classifier"
MAX_CLASSES = 1000
MIN_ROWS = 10
# Column names taken for the text when no column is profiled as free text (or several are).
TEXT_COLUMN_NAMES = ("text", "review", "sentence", "body", "content", "message", "comment", "document")


class TextClassifierHyperparameters(BaseModel):
    """Hyperparameters of ``text-classifier``; the defaults reach the Rotten Tomatoes bar (0.78, measured 0.783)."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["gru", "lstm", "transformer", "bag"] = Field(
        default="gru",
        description="gru/lstm: recurrent encoder; transformer: small pre-norm encoder; bag: no encoder, only "
        "the bag of unigrams and bigrams (fastText-like).",
    )
    bidirectional: bool = Field(default=True, description="Recurrent encoders read the text both ways.")
    embedding_dim: int = Field(default=64, ge=8, le=1024)
    hidden_size: int = Field(default=64, ge=8, le=1024, description="Recurrent state width (gru/lstm).")
    num_layers: int = Field(default=1, ge=1, le=4, description="Stacked encoder layers.")
    heads: int = Field(default=4, ge=1, le=16, description="Attention heads (transformer).")
    bag: bool = Field(default=True, description="Add a bag of unigrams (and bigrams) beside the encoder.")
    bag_dim: int = Field(default=32, ge=0, le=1024, description="Width of the bag's vectors; 0 = embedding_dim.")
    bigrams: int = Field(
        default=50_000, ge=0, le=200_000, description="Most frequent training bigrams in the bag; 0 = none."
    )
    members: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Networks trained side by side and averaged (an ensemble); 1 halves the time.",
    )
    dropout: float = Field(default=0.5, ge=0.0, le=0.9)
    token_dropout: float = Field(default=0.3, ge=0.0, le=0.9, description="Share of tokens hidden in training.")
    tokenizer: Literal["wordpiece", "bpe"] = "wordpiece"
    vocab_size: int = Field(default=12_000, ge=100, le=100_000, description="Tokenizer vocabulary, at most.")
    max_length: int = Field(default=64, ge=4, le=1024, description="Tokens per text; longer texts are truncated.")
    lowercase: bool = True
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="Momentum (sgd only).")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    epochs: int = Field(default=30, ge=1, le=1000, description="Most epochs; early stopping may end sooner.")
    batch_size: int = Field(default=64, ge=1, le=65536)
    l1: float = Field(default=0.0, ge=0.0, le=1.0)
    l2: float = Field(default=0.0, ge=0.0, le=1.0, description="Weight decay.")
    early_stopping_patience: int = Field(default=3, ge=0, le=1000, description="0 = off.")
    validation_split: float = Field(default=0.1, ge=0.0, le=0.5)
    test_split: float = Field(default=0.2, ge=0.05, le=0.5)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextClassifierHyperparameters:
        if self.encoder == "transformer" and self.embedding_dim % self.heads:
            raise ValueError(f"embedding_dim ({self.embedding_dim}) must be a multiple of heads ({self.heads})")
        return self


def parse_hyperparameters(raw: dict[str, Any] | None) -> TextClassifierHyperparameters:
    """Validate user input; an unknown or out-of-range field raises InvalidInput naming it."""
    try:
        return TextClassifierHyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        errors = [{"loc": ["hyperparameters", *error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'hyperparameters'}: {error['msg']}"
            for error in errors
        )
        raise InvalidInput(f"invalid hyperparameters: {summary}", errors=errors) from None


def _field_error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"loc": ["body", field], "msg": message}])


def _text_column(dataset: DatasetInfo, request: PlanRequest, names: list[str]) -> str:
    named = request.columns.get("text")
    if named is not None:
        profile = dataset.column(named)
        if profile is None:
            raise _field_error("columns", f"text column '{named}' is not in the dataset; columns: {names}")
        if profile.get("type") in ("numeric", "boolean", "datetime"):
            raise _field_error("columns", f"column '{named}' holds {profile.get('type')} values, not text")
        if named == request.target:
            raise _field_error("columns", f"column '{named}' cannot be both the text and the target")
        return named
    candidates = [c["name"] for c in dataset.columns if c.get("type") == "text" and c["name"] != request.target]
    if len(candidates) == 1:
        return str(candidates[0])
    pool = candidates or [
        c["name"] for c in dataset.columns if c.get("type") == "categorical" and c["name"] != request.target
    ]
    by_name = [name for name in pool if str(name).lower() in TEXT_COLUMN_NAMES]
    if len(by_name) == 1:
        return str(by_name[0])
    if candidates:
        raise _field_error("columns", f'several columns hold text ({candidates}); name one with {{"text": "<col>"}}')
    raise _field_error("columns", f'no column holds free text; name the text column with {{"text": "<col>"}}: {names}')


def plan(dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
    """Settle the text and label columns (see the module docstring); InvalidInput names what to fix."""
    if dataset.kind != "tabular":
        raise _field_error(
            "family", f"{FAMILY_NAME} trains on tables with a text column; dataset '{dataset.name}' is {dataset.kind}"
        )
    if request.task not in (None, "classification"):
        raise _field_error("task", f"{FAMILY_NAME} only does classification, not '{request.task}'")
    unknown = sorted(set(request.columns) - {"text"})
    if unknown:
        raise _field_error("columns", f"unknown roles {unknown}; {FAMILY_NAME} takes only 'text'")
    names = [str(column["name"]) for column in dataset.columns]
    target = request.target
    if target is not None and dataset.column(target) is None:
        raise _field_error("target", f"column '{target}' is not in the dataset; columns: {names}")
    if target is None:
        text_hint = request.columns.get("text")
        others = [c["name"] for c in dataset.columns if c["name"] != text_hint and c.get("type") != "text"]
        if len(others) != 1:
            raise _field_error("target", f"name the label column; columns: {names}")
        target = str(others[0])
    text = _text_column(dataset, PlanRequest(target=target, task=request.task, columns=request.columns), names)
    profile = dataset.column(target) or {}
    classes = int(profile.get("unique", 0))
    if classes < 2:
        found = "no values (every row is empty)" if classes == 0 else "a single class"
        raise _field_error("target", f"column '{target}' has {found}; classification needs two or more classes")
    if classes > MAX_CLASSES:
        raise _field_error(
            "target", f"column '{target}' has {classes} distinct values; at most {MAX_CLASSES} classes are supported"
        )
    if dataset.row_count < MIN_ROWS:
        raise _field_error("dataset_id", f"the dataset has {dataset.row_count} rows; at least {MIN_ROWS} are needed")
    # Refused here, before a worker is spent on it (versions profiled before the stat existed fail in the job).
    longest = ((dataset.column(text) or {}).get("stats") or {}).get("max_length")
    if isinstance(longest, int) and longest > MAX_TEXT_CHARS:
        raise _field_error(
            "columns",
            f"column '{text}' holds a text of {longest:,} characters; at most {MAX_TEXT_CHARS:,} are accepted: "
            "split long documents into passages (one row each) and upload the dataset again",
        )
    return JobPlan(task="classification", target=target, roles={"text": text})


def describe() -> dict[str, Any]:
    """JSON description for ``maas families``."""
    return {
        "name": FAMILY_NAME,
        "tasks": ["classification"],
        "data": "tabular",
        "description": "Text classification: a tokenizer trained on your data, an embedding and a GRU/LSTM/"
        "transformer encoder (or a bag of n-grams). Trains on a table with a text column and a label column; "
        "predicts raw strings.",
        "columns": {"text": "the column holding the texts (inferred when there is one)"},
        "limits": {"max_text_chars": MAX_TEXT_CHARS},
        "hyperparameters": TextClassifierHyperparameters.model_json_schema(),
        "artifact": "onnx",
    }


@dataclass(frozen=True)
class TextClassifierFamily:
    """The family's entry in :data:`maas.models.FAMILIES`."""

    name: str = FAMILY_NAME
    task_kinds: tuple[str, ...] = ("classification",)
    data_kinds: tuple[str, ...] = ("tabular",)
    hyperparameters: type[TextClassifierHyperparameters] = TextClassifierHyperparameters

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> TextClassifierHyperparameters:
        return parse_hyperparameters(raw)

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        return plan(dataset, request)

    def describe(self) -> dict[str, Any]:
        return describe()


TEXT_CLASSIFIER = TextClassifierFamily()
