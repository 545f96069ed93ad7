"""The ``causal-lm`` family: decoder-only language models trained on a tenant's text, as jobs.

Two modes:

- ``scratch``: a byte-level BPE tokenizer trained on the training split and a small GPT-2 style model;
- ``finetune``: an imported (or platform) causal LM named by ``base_model``, trained further in full or
  with LoRA adapters that are merged into the weights at the end (the result is a plain model either way).

The data is a table with a text column (plain language modelling), or chat / prompt-completion records
as ``/v1/files`` stores them (a ``messages`` column of JSON conversations, or ``prompt`` + ``completion``):
the loss then counts the assistant's (the completion's) tokens only.

This module is torch-free: the API checks a request against the dataset profile with it. The trainer is
:mod:`maas.training.causal_lm`; the result is an HF-style directory (config.json, model.safetensors,
tokenizer.json, ...) that the generation runtime loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from maas.data.chat_records import COMPLETION_COLUMN, MESSAGES_COLUMN, PROMPT_COLUMN, shape_of_columns
from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, JobPlan, PlanRequest

FAMILY_NAME = "causal-lm"
TASK = "generation"
TEXT_ROLE = "text"
ROLES = (TEXT_ROLE, MESSAGES_COLUMN, PROMPT_COLUMN, COMPLETION_COLUMN)
DataShape = Literal["text", "chat", "prompt_completion"]
MIN_ROWS = 2

# Learning rates by mode and method when none is given. Measured on SmolLM2-135M-Instruct, 24 chat records,
# batch 4, 2 epochs (10 steps): LoRA r=8 on q/v at 1e-3 left the validation loss at 1.04 and did not learn
# the replies; at 3e-3 it reached 0.004 (full fine-tuning at 5e-5: 0.001) and both still answer "Paris".
DEFAULT_LEARNING_RATE = {"scratch": 3e-3, "full": 5e-5, "lora": 3e-3}
# LoRA targets by architecture when none are given: the attention projections (Hu et al. 2021, §7.1).
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj", "c_attn")


class CausalLMHyperparameters(BaseModel):
    """Hyperparameters of ``causal-lm``; ``mode`` follows ``base_model`` when not given."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["scratch", "finetune"] | None = Field(
        default=None, description="scratch: a new small GPT; finetune: train base_model further. None: by base_model."
    )
    base_model: str | None = Field(
        default=None, min_length=1, max_length=100, description="Model to fine-tune: your own or a platform model."
    )
    # LoRA by default: on SmolLM2-135M it learned the same replies as full fine-tuning in 16 s instead of 44 s
    # with 2.4 GB peak RSS instead of 4.1 GB, and its checkpoints hold 0.46 M trainable weights instead of
    # 134.5 M (benchmarks/causal_lm_finetune.py).
    method: Literal["full", "lora"] = Field(
        default="lora", description="finetune: all weights (full) or low-rank adapters merged at the end (lora)."
    )
    lora_r: int = Field(default=8, ge=1, le=256, description="Rank of the LoRA adapters.")
    lora_alpha: float = Field(default=16.0, gt=0.0, le=1024.0, description="LoRA scale numerator (scale = alpha/r).")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Names of the linear layers that get adapters; None: q_proj and v_proj (Llama), c_attn (GPT-2).",
    )
    block_size: int = Field(default=256, ge=8, le=4096, description="Tokens per training sequence.")
    epochs: int = Field(default=3, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000, description="Stop after this many steps.")
    batch_size: int = Field(default=8, ge=1, le=512)
    learning_rate: float | None = Field(
        default=None, gt=0.0, le=1.0, description="None: 3e-3 (scratch), 5e-5 (full fine-tune), 3e-3 (LoRA)."
    )
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=0.5, description="Share of the steps with a linear warm-up.")
    gradient_clip: float = Field(default=1.0, ge=0.0, le=100.0, description="Max gradient norm; 0 = off.")
    early_stopping_patience: int = Field(default=0, ge=0, le=1000, description="Epochs without improvement; 0 = off.")
    validation_split: float = Field(default=0.1, ge=0.0, le=0.5)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    vocab_size: int = Field(default=2000, ge=300, le=65536, description="scratch: BPE vocabulary size.")
    n_layer: int = Field(default=2, ge=1, le=24, description="scratch: transformer blocks.")
    n_head: int = Field(default=2, ge=1, le=32, description="scratch: attention heads.")
    n_embd: int = Field(default=128, ge=16, le=2048, description="scratch: width (a multiple of n_head).")

    @model_validator(mode="after")
    def _consistent(self) -> CausalLMHyperparameters:
        if self.mode is None:
            self.mode = "finetune" if self.base_model else "scratch"
        if self.mode == "finetune" and not self.base_model:
            raise ValueError("mode 'finetune' needs base_model: the name of the model to train further")
        if self.mode == "scratch" and self.base_model:
            raise ValueError("base_model is only used with mode 'finetune'")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        return self

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATE["scratch" if self.mode == "scratch" else self.method]


def parse_hyperparameters(raw: dict[str, Any] | None) -> CausalLMHyperparameters:
    try:
        return CausalLMHyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        errors = [{"loc": ["hyperparameters", *error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'hyperparameters'}: {error['msg']}"
            for error in errors
        )
        raise InvalidInput(f"invalid hyperparameters: {summary}", errors=errors) from None


def _no_column(role: str, column: str, names: list[str]) -> InvalidInput:
    return InvalidInput(
        f"columns.{role} names '{column}', which is not in the dataset (columns: {', '.join(names)})",
        errors=[{"loc": ["columns", role], "msg": "no such column"}],
    )


def _text_column(dataset: DatasetInfo, names: list[str]) -> str:
    """The text column when none is named: one called "text", else the only text-typed column."""
    if TEXT_ROLE in names:
        return TEXT_ROLE
    texts = [str(column["name"]) for column in dataset.columns if column.get("type") == "text"]
    if len(texts) == 1:
        return texts[0]
    raise InvalidInput(
        "causal-lm needs a text column, chat records (a 'messages' column, as /v1/files stores them) or "
        f"'prompt' and 'completion' columns; found {', '.join(names)}: send "
        '"columns": {"text": "<column>"} to say which column holds the text',
        errors=[{"loc": ["columns", TEXT_ROLE], "msg": "no text column"}],
    )


def resolve_shape(dataset: DatasetInfo, request: PlanRequest) -> tuple[DataShape, dict[str, str]]:
    """What the rows hold and which columns: explicit roles first, then the /v1/files shapes, then text."""
    names = [str(column["name"]) for column in dataset.columns]
    unknown = sorted(set(request.columns) - set(ROLES))
    if unknown:
        raise InvalidInput(
            f"columns has unknown roles {unknown}; causal-lm roles are {', '.join(ROLES)}",
            errors=[{"loc": ["columns", role], "msg": "unknown role"} for role in unknown],
        )
    for role, column in request.columns.items():
        if column not in names:
            raise _no_column(role, column, names)
    if TEXT_ROLE in request.columns:
        return "text", {TEXT_ROLE: request.columns[TEXT_ROLE]}
    if MESSAGES_COLUMN in request.columns:
        return "chat", {MESSAGES_COLUMN: request.columns[MESSAGES_COLUMN]}
    if PROMPT_COLUMN in request.columns or COMPLETION_COLUMN in request.columns:
        roles = {role: request.columns.get(role, role) for role in (PROMPT_COLUMN, COMPLETION_COLUMN)}
        for role, column in roles.items():
            if column not in names:
                raise _no_column(role, column, names)
        return "prompt_completion", roles
    shape = shape_of_columns(names)
    if shape == "chat":
        return "chat", {MESSAGES_COLUMN: MESSAGES_COLUMN}
    if shape == "prompt_completion":
        return "prompt_completion", {PROMPT_COLUMN: PROMPT_COLUMN, COMPLETION_COLUMN: COMPLETION_COLUMN}
    return "text", {TEXT_ROLE: _text_column(dataset, names)}


def plan(dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
    if dataset.kind != "tabular":
        raise InvalidInput(
            f"causal-lm trains on text tables or chat records, not '{dataset.kind}' datasets",
            errors=[{"loc": ["dataset_id"], "msg": "not a table"}],
        )
    if request.task is not None and request.task != TASK:
        raise InvalidInput(
            f"task '{request.task}' is not causal-lm's task ('{TASK}')",
            errors=[{"loc": ["task"], "msg": "unknown task"}],
        )
    if request.target is not None:
        raise InvalidInput(
            'causal-lm has no target column; name the text with "columns": {"text": "<column>"}',
            errors=[{"loc": ["target"], "msg": "not used by causal-lm"}],
        )
    shape, roles = resolve_shape(dataset, request)
    if dataset.row_count < MIN_ROWS:
        raise InvalidInput(
            f"the dataset has {dataset.row_count} rows; causal-lm needs at least {MIN_ROWS}",
            errors=[{"loc": ["dataset_id"], "msg": "too few rows"}],
        )
    return JobPlan(task=TASK, target=None, roles=roles, extra={"shape": shape})


@dataclass(frozen=True)
class CausalLMFamily:
    """The family's entry in :data:`maas.models.FAMILIES`."""

    name: str = FAMILY_NAME
    task_kinds: tuple[str, ...] = (TASK,)
    data_kinds: tuple[str, ...] = ("tabular",)
    hyperparameters: type[CausalLMHyperparameters] = CausalLMHyperparameters

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> CausalLMHyperparameters:
        return parse_hyperparameters(raw)

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        return plan(dataset, request)

    def describe(self) -> dict[str, Any]:
        return describe()


def describe() -> dict[str, Any]:
    return {
        "name": FAMILY_NAME,
        "tasks": [TASK],
        "data": "tabular",
        "description": (
            "Decoder-only language model: trained from scratch (byte-level BPE tokenizer + small GPT) or "
            "fine-tuned from an imported model (full or LoRA). Serves chat and text completions on /v1."
        ),
        "roles": {
            TEXT_ROLE: "column of plain text (language modelling on all of it)",
            MESSAGES_COLUMN: "chat conversations as JSON (loss on assistant messages)",
            PROMPT_COLUMN: "prompt text (with completion; loss on the completion)",
            COMPLETION_COLUMN: "completion text",
        },
        "hyperparameters": CausalLMHyperparameters.model_json_schema(),
        "artifact": "safetensors",
    }


CAUSAL_LM = CausalLMFamily()
