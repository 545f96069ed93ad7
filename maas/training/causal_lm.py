"""The ``causal-lm`` trainer: scratch training or fine-tuning (full or LoRA) with per-epoch checkpoints.

Data: plain text is packed into ``block_size`` token blocks (every token counts); chat records are
rendered with the model's chat template and prompt/completion records are concatenated, and there only
the assistant's (the completion's) tokens count in the loss, found through the tokenizer's character
offsets. Each epoch's shuffle is seeded from ``(seed, epoch)`` and the scratch GPT has no dropout, so a run
resumed from its checkpoint ends with the weights of an uninterrupted one.

Checkpoints hold only what trains (all weights, or just the LoRA adapters) plus the optimizer state, in
the safe format of :mod:`maas.training.checkpoints`; a scratch run keeps its tokenizer there too.

The result is an HF-style directory (config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json) that ``AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from maas.data.formats import load_frame
from maas.errors import InvalidInput
from maas.models.causal_lm import DEFAULT_LORA_TARGETS, CausalLMHyperparameters
from maas.models.causal_lm_net import (
    CHAT_TEMPLATE,
    build_gpt,
    save_tokenizer,
    stop_token_ids,
    train_tokenizer,
)
from maas.training import lora
from maas.training.checkpoints import TrainerState, load_checkpoint, save_checkpoint
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.trainer import TrainingCancelled, fingerprint

IGNORE = -100
_STOP_CHECK_EVERY = 4
_SAFE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")

Example = str | list[dict[str, str]] | tuple[str, str]  # text, chat messages, (prompt, completion)


@dataclass(frozen=True)
class Sequence:
    ids: list[int]
    labels: list[int]  # IGNORE where the token is context only


# --- data ------------------------------------------------------------------------------------------------


def _examples(frame: pd.DataFrame, shape: str, roles: dict[str, str]) -> list[Example]:
    if shape == "chat":
        examples: list[Example] = []
        for row, value in enumerate(frame[roles["messages"]]):
            try:
                messages = json.loads(str(value))
            except json.JSONDecodeError:
                raise InvalidInput(f"row {row + 1}: the messages column does not hold JSON") from None
            examples.append(messages)
        return examples
    if shape == "prompt_completion":
        pairs = zip(frame[roles["prompt"]], frame[roles["completion"]], strict=True)
        return [(str(prompt), str(completion)) for prompt, completion in pairs if isinstance(completion, str)]
    return [str(text) for text in frame[roles["text"]].dropna() if str(text).strip()]


def _datasets(
    data: TrainingData, spec: dict[str, Any], params: CausalLMHyperparameters
) -> tuple[list[Example], list[Example]]:
    """Training and validation examples: a split of the data, or all of it and a separate validation set
    (``spec["validation_data"]``: a blob digest, its format, shape and roles)."""
    examples = _examples(data.frame(), spec["plan"]["shape"], spec["roles"])
    validation = spec.get("validation_data")
    if not validation:
        return _split(examples, params.validation_split, params.seed)
    if data.fetch is None:
        raise InvalidInput("this platform cannot read a separate validation file in training jobs")
    frame = load_frame(data.fetch(validation["digest"]), validation["format"])
    return examples, _examples(frame, validation["shape"], validation["roles"])


def _split(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(len(examples) * share)
    if share > 0 and n_val == 0 and len(examples) >= 10:
        n_val = 1
    val = [examples[i] for i in order[:n_val]]
    return [examples[i] for i in order[n_val:]], val


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], *, prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    return str(text)


def _assistant_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[str, list[range]]:
    """The rendered conversation and the character ranges of its assistant replies (with their end-of-turn
    marker). A template whose renderings are not prefixes of each other gets one span: all of it."""
    full = _render(tokenizer, messages, prompt=False)
    spans: list[range] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], prompt=True) if index else ""
        upto = _render(tokenizer, messages[: index + 1], prompt=False)
        if not (full.startswith(before) and full.startswith(upto)):
            return full, [range(0, len(full))]
        spans.append(range(len(before), len(upto)))
    return full, spans


def _labelled(tokenizer: PreTrainedTokenizerBase, text: str, spans: list[range]) -> Sequence:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [
        token if any(start in span for span in spans) else IGNORE
        for token, (start, _) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return Sequence(ids, labels)


def encode(tokenizer: PreTrainedTokenizerBase, examples: list[Example], *, block_size: int, eos: int) -> list[Sequence]:
    """Token sequences of at most ``block_size``; those with nothing to learn (a prompt that fills the
    block) are dropped."""
    if examples and isinstance(examples[0], str):
        stream: list[int] = []
        for text in examples:
            stream += [*tokenizer(str(text), add_special_tokens=False)["input_ids"], eos]
        blocks = [stream[start : start + block_size] for start in range(0, len(stream), block_size)]
        return [Sequence(block, list(block)) for block in blocks if len(block) > 1]
    sequences: list[Sequence] = []
    for example in examples:
        if isinstance(example, tuple):
            prompt, completion = example
            text = prompt + completion + str(tokenizer.eos_token or "")
            sequence = _labelled(tokenizer, text, [range(len(prompt), len(text))])
        else:
            assert isinstance(example, list)
            text, spans = _assistant_spans(tokenizer, example)
            sequence = _labelled(tokenizer, text, spans)
        ids, labels = sequence.ids[:block_size], sequence.labels[:block_size]
        if any(label != IGNORE for label in labels[1:]):
            sequences.append(Sequence(ids, labels))
    return sequences


def _batches(sequences: list[Sequence], order: list[int], size: int, pad: int) -> Iterator[tuple[torch.Tensor, ...]]:
    for start in range(0, len(order), size):
        chunk = [sequences[i] for i in order[start : start + size]]
        width = max(len(s.ids) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s.ids)] = torch.tensor(s.ids)
            labels[row, : len(s.labels)] = torch.tensor(s.labels)
            mask[row, : len(s.ids)] = 1
        yield ids, mask, labels


def _loss_sum(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled tokens, and how many there were."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return total, int((targets != IGNORE).sum())


# --- model -----------------------------------------------------------------------------------------------


def _fetch(data: TrainingData, digest: str) -> bytes:
    if data.fetch is None:
        raise InvalidInput("this platform cannot read base model files in training jobs")
    return data.fetch(digest)


def _base_directory(data: TrainingData, spec: dict[str, Any], work: Path) -> Path:
    """The base model's files written under ``work`` once (a resumed attempt reuses them)."""
    files: dict[str, str] = spec.get("base_model_files") or {}
    if not files:
        raise InvalidInput(
            f"the base model '{spec['hyperparameters'].get('base_model')}' has no files to fine-tune from",
            errors=[{"loc": ["hyperparameters", "base_model"], "msg": "no model files"}],
        )
    if "model.safetensors" not in files and not any(name.endswith(".safetensors") for name in files):
        raise InvalidInput(
            f"the base model '{spec['hyperparameters'].get('base_model')}' has no safetensors weights "
            f"(files: {', '.join(sorted(files))}); causal-lm fine-tunes safetensors models",
            errors=[{"loc": ["hyperparameters", "base_model"], "msg": "no safetensors weights"}],
        )
    target = work / "base"
    if (target / ".complete").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".base-", dir=work))
    for name, digest in files.items():
        path = (staging / name).resolve()
        if staging.resolve() not in path.parents:
            raise InvalidInput(f"base model file name {name!r} leaves the model directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_fetch(data, digest))
    (staging / ".complete").write_text("ok")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    return target


def _scratch_tokenizer(work: Path, train: list[Example], params: CausalLMHyperparameters) -> PreTrainedTokenizerBase:
    """Trained once on the training split and kept beside the checkpoint, so a resumed run reuses it."""
    saved = work / "tokenizer"
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(saved))

    def texts() -> Iterator[str]:
        for example in train:
            if isinstance(example, str):
                yield example
            elif isinstance(example, tuple):
                yield example[0] + example[1]
            else:
                yield "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in example)

    tokenizer = train_tokenizer(texts(), params.vocab_size)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=work))
    save_tokenizer(tokenizer, staging)
    os.rename(staging, saved)
    return AutoTokenizer.from_pretrained(str(saved))


def _build(
    data: TrainingData, spec: dict[str, Any], params: CausalLMHyperparameters, train: list[Example], work: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, int]:
    """The model to train, its tokenizer and the sequence length."""
    if params.mode == "scratch":
        tokenizer = _scratch_tokenizer(work, train, params)
        tokenizer.model_max_length = params.block_size  # the GPT has no position embeddings beyond it
        torch.manual_seed(params.seed)
        model: PreTrainedModel = build_gpt(
            tokenizer, block_size=params.block_size, n_layer=params.n_layer, n_head=params.n_head, n_embd=params.n_embd
        )
        return model, tokenizer, params.block_size
    base = _base_directory(data, spec, work)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHAT_TEMPLATE  # a base model without one still learns from chat records
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    block = min(params.block_size, int(getattr(model.config, "max_position_embeddings", params.block_size)))
    if params.method == "lora":
        torch.manual_seed(params.seed)
        lora.apply(
            model,
            targets=params.lora_target_modules or DEFAULT_LORA_TARGETS,
            r=params.lora_r,
            alpha=params.lora_alpha,
            dropout=params.lora_dropout,
        )
    return model, tokenizer, block


def _optimizer(parameters: list[torch.nn.Parameter], params: CausalLMHyperparameters) -> torch.optim.Optimizer:
    lr = params.resolved_learning_rate()
    if params.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=params.weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=params.weight_decay)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --- the loop --------------------------------------------------------------------------------------------


def _trainable(model: PreTrainedModel) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _snapshot(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in _trainable(model).items()}


def _load_weights(model: PreTrainedModel, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in _trainable(model).items():
            parameter.copy_(weights[name])


@dataclass
class _Loop:
    model: PreTrainedModel
    params: CausalLMHyperparameters
    train: list[Sequence]
    val: list[Sequence]
    pad: int
    should_stop: Callable[[], bool]

    def __post_init__(self) -> None:
        self.optimizer = _optimizer(list(_trainable(self.model).values()), self.params)
        self.steps_per_epoch = math.ceil(len(self.train) / self.params.batch_size)
        total = self.steps_per_epoch * self.params.epochs
        self.total_steps = min(total, self.params.max_steps) if self.params.max_steps else total
        self.warmup = math.ceil(self.params.warmup_ratio * self.total_steps)

    def epoch(self, epoch: int, step: int) -> tuple[float, int, int]:
        """Train one epoch from global ``step``: (loss per labelled token, tokens, steps taken)."""
        generator = torch.Generator().manual_seed(self.params.seed * 1_000_003 + epoch)
        torch.manual_seed(self.params.seed * 7_919 + epoch)  # LoRA dropout; inside fork_rng
        order = torch.randperm(len(self.train), generator=generator).tolist()
        self.model.train()
        total, tokens, taken = 0.0, 0, 0
        base_lr = self.params.resolved_learning_rate()
        for ids, mask, labels in _batches(self.train, order, self.params.batch_size, self.pad):
            if step + taken >= self.total_steps:
                break
            if taken and taken % _STOP_CHECK_EVERY == 0 and self.should_stop():
                raise TrainingCancelled(f"cancelled during epoch {epoch + 1}")
            for group in self.optimizer.param_groups:
                group["lr"] = base_lr * _lr_factor(step + taken, self.total_steps, self.warmup)
            loss_sum, count = _loss_sum(self.model, ids, mask, labels)
            if count == 0:
                continue
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss_sum / count)
            if self.params.gradient_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(_trainable(self.model).values()), self.params.gradient_clip)
            self.optimizer.step()
            total += float(loss_sum.detach())
            tokens += count
            taken += 1
        loss = total / max(tokens, 1)
        if not math.isfinite(loss):
            raise InvalidInput(
                f"training diverged in epoch {epoch + 1}: the loss became {loss}; lower learning_rate",
                errors=[{"loc": ["hyperparameters", "learning_rate"], "msg": "training diverged"}],
            )
        return loss, tokens, taken

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.val:
            return None
        self.model.eval()  # type: ignore[no-untyped-call]
        total, tokens = 0.0, 0
        order = list(range(len(self.val)))
        for ids, mask, labels in _batches(self.val, order, self.params.batch_size, self.pad):
            loss_sum, count = _loss_sum(self.model, ids, mask, labels)
            total += float(loss_sum)
            tokens += count
        return total / tokens if tokens else None


def _perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 50.0))


def _done(state: TrainerState, params: CausalLMHyperparameters, loop: _Loop) -> bool:
    steps = state.history[-1]["global_step"] if state.history else 0
    patience = params.early_stopping_patience
    return state.epoch >= params.epochs or steps >= loop.total_steps or (patience > 0 and state.bad_epochs >= patience)


def _fit(
    loop: _Loop,
    state: TrainerState,
    best: dict[str, torch.Tensor] | None,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
) -> tuple[TrainerState, dict[str, torch.Tensor] | None]:
    params = loop.params
    resumed_from = state.epoch
    session_seconds = 0.0
    with torch.random.fork_rng(devices=[]):
        while not _done(state, params, loop):
            if loop.should_stop():
                raise TrainingCancelled(f"cancelled before epoch {state.epoch + 1}")
            started = time.monotonic()
            step = state.history[-1]["global_step"] if state.history else 0
            train_loss, tokens, taken = loop.epoch(state.epoch, step)
            val_loss = loop.evaluate()
            state.epoch += 1
            if val_loss is not None and params.early_stopping_patience > 0:
                if state.best_val_loss is None or val_loss < state.best_val_loss:
                    state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
                    best = _snapshot(loop.model)
                else:
                    state.bad_epochs += 1
            seconds = time.monotonic() - started
            state.elapsed_seconds += seconds
            session_seconds += seconds
            trained = (state.history[-1]["tokens"] if state.history else 0) + tokens
            state.history.append(
                {
                    "epoch": state.epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "global_step": step + taken,
                    "tokens": trained,
                }
            )
            done_share = min(1.0, (step + taken) / max(loop.total_steps, 1))
            per_epoch = session_seconds / (state.epoch - resumed_from)
            on_epoch(
                EpochReport(
                    epoch=state.epoch,
                    epochs=params.epochs,
                    train_loss=train_loss,
                    val_loss=val_loss,
                    train_metrics={
                        "perplexity": _perplexity(train_loss) or 0.0,
                        "tokens": float(tokens),
                        "step": float(step + taken),
                    },
                    val_metrics={} if val_loss is None else {"perplexity": _perplexity(val_loss) or 0.0},
                    progress=done_share,
                    eta_seconds=0.0 if _done(state, params, loop) else per_epoch * (params.epochs - state.epoch),
                    elapsed_seconds=state.elapsed_seconds,
                )
            )
            # After the epoch's event (as in the generic trainer): a kill in between redoes this epoch
            # rather than resuming past an epoch no event reported.
            save_checkpoint(
                checkpoint_dir,
                state=state,
                model={name: p.detach() for name, p in _trainable(loop.model).items()},
                best=best,
                optimizer_state=loop.optimizer.state_dict()["state"],
            )
    return state, best


# --- the job ---------------------------------------------------------------------------------------------


def _restore(loop: _Loop, checkpoint_dir: Path, key: str) -> tuple[TrainerState, dict[str, torch.Tensor] | None]:
    checkpoint = load_checkpoint(checkpoint_dir, fingerprint=key)
    if checkpoint is None:
        return TrainerState(fingerprint=key), None
    _load_weights(loop.model, checkpoint.model)
    optimizer_state = loop.optimizer.state_dict()
    optimizer_state["state"] = checkpoint.optimizer_state
    loop.optimizer.load_state_dict(optimizer_state)
    return checkpoint.state, checkpoint.best


def _export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, work: Path) -> dict[str, bytes]:
    """The HF-style files of the trained model (weights as safetensors, everything else JSON)."""
    out = Path(tempfile.mkdtemp(prefix=".export-", dir=work))
    try:
        stops = stop_token_ids(tokenizer)
        model.config.eos_token_id = stops[0]
        model.config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = stops
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(str(out), safe_serialization=True)
        save_tokenizer(tokenizer, out)
        files = {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    allowed = {"config.json", "model.safetensors", *_SAFE_FILES}
    return {name: content for name, content in files.items() if name in allowed}


def train_job(
    data: TrainingData,
    spec: dict[str, Any],
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedModel:
    params = CausalLMHyperparameters.model_validate(spec["hyperparameters"])
    # Half the cores: the API process and the other workers share the machine, and oversubscribed torch
    # threads spin instead of working (measured on 2 busy cores: 1 thread 0.06 s/step, 2 threads 0.9 s).
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    train_examples, val_examples = _datasets(data, spec, params)
    if len(train_examples) < 1:
        raise InvalidInput("the dataset has no usable rows: every text is empty")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    work = checkpoint_dir / "work"
    work.mkdir(exist_ok=True)
    model, tokenizer, block = _build(data, spec, params, train_examples, work)
    eos = stop_token_ids(tokenizer)[0]
    train = encode(tokenizer, train_examples, block_size=block, eos=eos)
    val = encode(tokenizer, val_examples, block_size=block, eos=eos)
    if not train:
        raise InvalidInput(
            f"no training sequence has a token to learn from within block_size={block}: prompts fill the whole "
            "block; raise block_size or shorten the prompts",
            errors=[{"loc": ["hyperparameters", "block_size"], "msg": "too small for the data"}],
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    loop = _Loop(model=model, params=params, train=train, val=val, pad=int(pad), should_stop=should_stop)
    shapes = {name: list(p.shape) for name, p in _trainable(model).items()}
    data_digest = hashlib.sha256(data.content).hexdigest()
    key = fingerprint("causal-lm", params.model_dump(mode="json"), data_digest, spec.get("base_model_files"), shapes)
    state, best = _restore(loop, checkpoint_dir / "state", key)
    state, best = _fit(loop, state, best, checkpoint_dir / "state", on_epoch)
    if best is not None:
        _load_weights(model, best)
    model.eval()  # type: ignore[no-untyped-call]
    last = state.history[-1] if state.history else {}
    val_loss = state.best_val_loss if best is not None else last.get("val_loss")
    train_loss = last.get("train_loss")
    if params.mode == "finetune" and params.method == "lora":
        lora.merge(model)
    files = _export(model, tokenizer, work)
    n_parameters = sum(p.numel() for p in model.parameters())
    metrics: dict[str, Any] = {
        "val_loss": val_loss,
        "perplexity": _perplexity(val_loss),
        "train_loss": train_loss,
        "train_perplexity": _perplexity(train_loss),
        "trained_tokens": int(last.get("tokens", 0)),
        "steps": int(last.get("global_step", 0)),
        "parameters": n_parameters,
        "trainable_parameters": sum(math.prod(shape) for shape in shapes.values()),
        "train_sequences": len(train),
        "val_sequences": len(val),
    }
    hyperparameters = params.model_dump(mode="json") | {"learning_rate": params.resolved_learning_rate()}
    return TrainedModel(
        artifact=files["model.safetensors"],
        artifact_format="safetensors",
        preprocessing={
            "tokenizer": "tokenizer.json",
            "stop_token_ids": stop_token_ids(tokenizer),
            "context_length": block if params.mode == "scratch" else None,
        },
        signature={
            "task": "generation",
            "inputs": {"messages": "chat messages", "prompt": "text"},
            "outputs": {"text": "generated text"},
            "data": spec["plan"]["shape"],
        },
        metrics=metrics,
        hyperparameters=hyperparameters,
        task="generation",
        epochs_run=state.epoch,
        files=files,
    )
