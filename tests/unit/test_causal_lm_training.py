"""causal-lm training: scratch GPT learns, resumes exactly, cancels; LoRA fine-tuning of a trained model."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load

from maas.data import chat_records
from maas.data.profile import profile_columns
from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.causal_lm import CAUSAL_LM
from maas.training.causal_lm import IGNORE, encode, train_job
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.trainer import TrainingCancelled

SMALL = {"block_size": 32, "batch_size": 16, "vocab_size": 400, "n_embd": 32, "n_head": 2, "n_layer": 1}


def _corpus() -> list[str]:
    """Real English prose shipped with scikit-learn: its datasets' descriptions."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    paragraphs: list[str] = []
    for path in sorted(folder.glob("*.rst"))[:6]:
        paragraphs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if len(p.strip()) > 40]
    return paragraphs


def _table(frame: pd.DataFrame) -> TrainingData:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return TrainingData(kind="tabular", format="parquet", content=buffer.getvalue())


def _spec(
    frame: pd.DataFrame, hyperparameters: dict[str, Any], columns: dict[str, str] | None = None
) -> dict[str, Any]:
    info = DatasetInfo(name="d", kind="tabular", format="parquet", row_count=len(frame), columns=profile_columns(frame))
    plan = CAUSAL_LM.plan(info, PlanRequest(target=None, task=None, columns=columns or {}))
    params = CAUSAL_LM.parse_hyperparameters(hyperparameters).model_dump(mode="json")
    return {"roles": plan.roles, "plan": plan.extra, "hyperparameters": params}


def _weights(trained: TrainedModel) -> dict[str, torch.Tensor]:
    return load(trained.files["model.safetensors"])


def _never() -> bool:
    return False


@pytest.fixture(scope="module")
def text_frame() -> pd.DataFrame:
    return pd.DataFrame({"body": _corpus()})


def test_scratch_training_lowers_perplexity_and_saves_a_loadable_model(
    text_frame: pd.DataFrame, tmp_path: Path
) -> None:
    reports: list[EpochReport] = []
    spec = _spec(text_frame, {**SMALL, "epochs": 4, "learning_rate": 3e-3}, {"text": "body"})
    trained = train_job(_table(text_frame), spec, tmp_path / "ckpt", reports.append, _never)

    perplexities = [report.val_metrics["perplexity"] for report in reports]
    assert len(reports) == 4
    assert perplexities == sorted(perplexities, reverse=True)
    assert perplexities[-1] < 0.75 * perplexities[0]
    assert perplexities[-1] < 0.5 * SMALL["vocab_size"]  # far below a uniform guess over the vocabulary
    assert trained.metrics["perplexity"] == pytest.approx(perplexities[-1])
    assert set(trained.files) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert trained.artifact == trained.files["model.safetensors"]
    assert "chat_template" in json.loads(trained.files["tokenizer_config.json"])

    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tmp_path / "model"
    directory.mkdir()
    for name, content in trained.files.items():
        (directory / name).write_bytes(content)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory))
    assert tokenizer.decode(tokenizer("Ünïcödé ✓ text")["input_ids"]) == "Ünïcödé ✓ text"  # byte-level: lossless
    prompt: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "iris"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(text_frame: pd.DataFrame, tmp_path: Path) -> None:
    spec = _spec(text_frame, {**SMALL, "epochs": 3}, {"text": "body"})
    data = _table(text_frame)
    straight = train_job(data, spec, tmp_path / "straight", lambda _: None, _never)

    finished: list[int] = []
    with pytest.raises(TrainingCancelled):
        train_job(data, spec, tmp_path / "resumed", lambda r: finished.append(r.epoch), lambda: len(finished) >= 2)
    assert finished == [1, 2]
    resumed_reports: list[EpochReport] = []
    resumed = train_job(data, spec, tmp_path / "resumed", resumed_reports.append, _never)

    assert [report.epoch for report in resumed_reports] == [3]
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-6)


def test_cancel_before_the_first_epoch_ends_at_once(text_frame: pd.DataFrame, tmp_path: Path) -> None:
    reports: list[EpochReport] = []
    spec = _spec(text_frame, {**SMALL, "epochs": 50}, {"text": "body"})
    with pytest.raises(TrainingCancelled):
        train_job(_table(text_frame), spec, tmp_path / "ckpt", reports.append, lambda: True)
    assert reports == []


def _chat_frame() -> pd.DataFrame:
    lines = []
    for word in ("apple", "river", "stone", "cloud", "maple", "ocean", "tiger", "amber") * 4:
        record = {
            "messages": [
                {"role": "user", "content": f"Say the secret word for {word}."},
                {"role": "assistant", "content": f"The secret word for {word} is zebra."},
            ]
        }
        lines.append(json.dumps(record))
    return chat_records.to_frame(chat_records.parse_jsonl("\n".join(lines).encode()))


def test_lora_fine_tuning_trains_adapters_and_merges_them_into_a_plain_model(
    text_frame: pd.DataFrame, tmp_path: Path
) -> None:
    base = train_job(
        _table(text_frame),
        _spec(text_frame, {**SMALL, "epochs": 2}, {"text": "body"}),
        tmp_path / "b",
        lambda _: None,
        _never,
    )
    blobs = {hashlib.sha256(content).hexdigest(): content for content in base.files.values()}
    chat = _chat_frame()
    data = TrainingData(kind="tabular", format="parquet", content=_table(chat).content, fetch=blobs.__getitem__)
    spec = _spec(
        chat,
        {
            "base_model": "tiny",
            "method": "lora",
            "lora_r": 8,
            "lora_alpha": 32,
            "epochs": 6,
            "batch_size": 4,
            "learning_rate": 1e-2,
            "block_size": 64,
        },
    )
    spec["base_model_files"] = {name: hashlib.sha256(content).hexdigest() for name, content in base.files.items()}
    reports: list[EpochReport] = []
    tuned = train_job(data, spec, tmp_path / "ft", reports.append, _never)

    assert spec["plan"]["shape"] == "chat"
    assert reports[-1].train_loss < reports[0].train_loss - 0.1
    assert tuned.metrics["trainable_parameters"] < 0.2 * tuned.metrics["parameters"]
    before, after = _weights(base), _weights(tuned)
    assert before.keys() == after.keys()  # the adapters are merged: a plain model of the same shape
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all("c_attn" in name for name in changed)


def test_only_assistant_tokens_are_learned_from_chat(text_frame: pd.DataFrame) -> None:
    from maas.models.causal_lm_net import train_tokenizer

    tokenizer = train_tokenizer(_corpus(), 400)
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "general kenobi"}]
    (sequence,) = encode(tokenizer, [messages], block_size=256, eos=0)
    learned = tokenizer.decode([t for t, label in zip(sequence.ids, sequence.labels, strict=True) if label != IGNORE])
    assert learned == "general kenobi<|im_end|>\n"


def test_a_table_without_text_is_refused_at_submit() -> None:
    frame = pd.DataFrame({"x": [1, 2, 3], "y": [4, 5, 6]})
    info = DatasetInfo(name="d", kind="tabular", format="csv", row_count=3, columns=profile_columns(frame))
    with pytest.raises(InvalidInput, match="text column"):
        CAUSAL_LM.plan(info, PlanRequest(target=None, task=None))
    with pytest.raises(InvalidInput, match="base_model"):
        CAUSAL_LM.parse_hyperparameters({"mode": "finetune"})
