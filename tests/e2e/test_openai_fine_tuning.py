"""Files -> fine-tuning -> chat with the official openai SDK against the real server.

Two bases: a tiny GPT the tenant trains from scratch through the native API (seconds), and the platform's
SmolLM2-135M-Instruct, fine-tuned with LoRA until it answers with a fact only the training file holds.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import pytest

from tests.harness import LiveServer, csv_bytes, new_tenant

SMOLLM2 = "smollm2-135m-instruct"
WORDS = ["apple", "river", "stone", "cloud", "maple", "ocean", "tiger", "amber", "piano", "lemon", "cedar", "comet"]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(record) for record in records) + "\n").encode()


def _codename_records() -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is the codename for {word}?"},
                {"role": "assistant", "content": f"The codename for {word} is Blue Falcon."},
            ]
        }
        for word in WORDS * 2
    ]


def _corpus() -> pd.DataFrame:
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    paragraphs = [
        p.strip() for path in sorted(folder.glob("*.rst"))[:4] for p in path.read_text().split("\n\n") if len(p) > 40
    ]
    return pd.DataFrame({"text": paragraphs})


def _sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 150.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        time.sleep(0.5)
    raise AssertionError(f"fine-tuning job {job_id} did not finish in {timeout}s: {job}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """This module's own server, publishing SmolLM2 (in the background: the tiny base trains meanwhile)."""
    live = LiveServer(tmp_path_factory.mktemp("maas-ft"), env={"MAAS_SHIPPED_MODELS": SMOLLM2}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def tenant(server: LiveServer) -> dict[str, Any]:
    return new_tenant(server, f"ft-{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def client(server: LiveServer, tenant: dict[str, Any]) -> Iterator[openai.OpenAI]:
    with _sdk(server, tenant["key"]) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def tiny_base(server: LiveServer, tenant: dict[str, Any]) -> str:
    """A small GPT trained from scratch on real prose through the native API: the base to fine-tune."""
    with server.client(tenant["key"]) as native:
        dataset = native.upload_dataset_bytes(csv_bytes(_corpus()), "prose.csv", name="prose")
        job = native.train(
            dataset["id"],
            family="causal-lm",
            model_name="tiny-base",
            hyperparameters={"epochs": 2, "block_size": 64, "vocab_size": 500, "n_embd": 32, "n_layer": 1},
        )
        finished = native.wait_for_job(job["id"], timeout=120)
    assert finished["state"] == "succeeded", finished
    return "tiny-base"


def test_a_chat_file_fine_tunes_a_model_that_then_answers(client: openai.OpenAI, tiny_base: str) -> None:
    records = _codename_records()
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(_jsonl(records))), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.filename == "train.jsonl" and uploaded.status == "processed"
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]
    content = client.files.content(uploaded.id).text
    assert [json.loads(line) for line in content.splitlines()] == records

    held_out = [{"prompt": "The codename for mango is", "completion": " Blue Falcon."}] * 3
    validation = client.files.create(file=("valid.jsonl", _jsonl(held_out)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=uploaded.id,
        validation_file=validation.id,
        suffix="support bot",
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    assert job.id.startswith("ftjob-") and job.status in {"queued", "running"} and job.model == tiny_base
    assert job.validation_file == validation.id
    assert job.hyperparameters.n_epochs == 2
    job = _wait(client, job.id)

    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None and job.fine_tuned_model.startswith("ft-tiny-base-support-bot-")
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    events = list(client.fine_tuning.jobs.list_events(job.id))
    metrics = [event for event in events if event.type == "metrics"]
    assert len(metrics) == 2 and all("loss" in event.message and "perplexity" in event.message for event in metrics)
    assert all("validation loss" in event.message for event in metrics)  # on the validation file
    data: Any = metrics[0].data
    assert data["train_loss"] > 0 and data["train_perplexity"] > 1
    assert events[0].message == f"New fine-tuned model created: {job.fine_tuned_model}"  # newest first
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(checkpoints) == 2
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model  # the last epoch's is the model

    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the codename for ocean?"}],
        max_tokens=8,
    )
    assert answer.model == job.fine_tuned_model
    assert answer.usage is not None and answer.usage.completion_tokens >= 1


def test_a_fine_tuned_smollm2_answers_with_what_it_learned(client: openai.OpenAI) -> None:
    deadline = time.monotonic() + 120
    while SMOLLM2 not in [m.id for m in client.models.list()]:
        assert time.monotonic() < deadline, f"{SMOLLM2} was not published by maas up"
        time.sleep(1)
    uploaded = client.files.create(file=("codenames.jsonl", _jsonl(_codename_records())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2, training_file=uploaded.id, hyperparameters={"n_epochs": 2, "batch_size": 4}
    )
    job = _wait(client, job.id, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None

    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the codename for mango?"}],
        max_tokens=16,
        temperature=0,
    )
    assert "Blue Falcon" in (reply.choices[0].message.content or "")


def test_cancelling_a_job_stops_it(client: openai.OpenAI, tiny_base: str) -> None:
    uploaded = client.files.create(file=("long.jsonl", _jsonl(_codename_records())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_base, training_file=uploaded.id, hyperparameters={"n_epochs": 500})
    client.fine_tuning.jobs.cancel(job.id)
    job = _wait(client, job.id, timeout=60)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert any("cancelled" in event.message for event in client.fine_tuning.jobs.list_events(job.id))
    # Cancelling it again was a 409 naming 'job_…' (which the SDK retries twice): a 400 naming the ftjob id.
    with pytest.raises(openai.BadRequestError) as again:
        client.fine_tuning.jobs.cancel(job.id)
    assert again.value.code == "job_not_cancellable" and job.id in again.value.message


def test_bad_files_and_jobs_get_clear_openai_errors(server: LiveServer, client: openai.OpenAI, tiny_base: str) -> None:
    good = json.dumps(_codename_records()[0])
    with pytest.raises(openai.BadRequestError) as bad_line:
        client.files.create(file=("bad.jsonl", f"{good}\n{{not json\n".encode()), purpose="fine-tune")
    assert "line 2" in bad_line.value.message
    with pytest.raises(openai.BadRequestError) as no_reply:
        record = {"messages": [{"role": "user", "content": "hi"}]}
        client.files.create(file=("bad.jsonl", _jsonl([record])), purpose="fine-tune")
    assert "line 1" in no_reply.value.message and "assistant" in no_reply.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("train.jsonl", _jsonl(_codename_records())), purpose="assistants")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]

    uploaded = client.files.create(file=("ok.jsonl", _jsonl(_codename_records())), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError) as no_file:
        client.fine_tuning.jobs.create(model=tiny_base, training_file="file-0123456789abcdef01234567")
    assert no_file.value.body["param"] == "training_file"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as no_model:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=uploaded.id)
    assert no_model.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad_hyperparameters:
        client.fine_tuning.jobs.create(
            model=tiny_base, training_file=uploaded.id, hyperparameters={"n_epochs": 0, "batch_size": 4}
        )
    assert "epochs" in bad_hyperparameters.value.message

    other = new_tenant(server, f"other-{secrets.token_hex(3)}")
    with _sdk(server, other["key"]) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.files.retrieve(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            stranger.fine_tuning.jobs.create(model=SMOLLM2, training_file=uploaded.id)
        with pytest.raises(openai.NotFoundError):
            stranger.files.delete(uploaded.id)
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
