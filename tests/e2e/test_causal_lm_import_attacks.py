"""A tenant's causal-LM archive is refused at import (422 naming the file) when it could reach an unpickler or a
file outside its folder, or would fail at serve time; one that imports is served without a 5xx.

Before, each of these imported (201) and then made every call a 500, or reached ``torch.load`` in the API
process: a shard map naming ``../../x`` or a ``.bin``, weights whose offsets pass the end of the file, a
config.json with ``num_attention_heads: 0``, ``hidden_size: -1``, a non-integer ``eos_token_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import LiveServer, new_tenant
from tests.tiny_causal_lm import copy_with, sharded, tiny_llama, with_header, zipped

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("maas-lm-import")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(live: LiveServer) -> str:
    return str(new_tenant(live, "lm-importer")["key"])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _import(live: LiveServer, key: str, folder: Path, name: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("model.zip", zipped(folder), "application/zip")},
        data={"name": name},
        timeout=300,
    )


def _refused(live: LiveServer, response: httpx.Response, *said: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    for text in said:
        assert text in body["detail"], body["detail"]
    assert "/tmp" not in response.text and str(live.home) not in response.text  # no server path
    return body


@pytest.mark.parametrize(
    "shard",
    [
        "../../secret.safetensors",
        "/etc/passwd",
        "pytorch_model.bin",
        "notes.txt",
        "sub/../model-00001-of-00001.safetensors",
    ],
)
def test_a_shard_map_naming_a_file_outside_the_model_or_not_safetensors_is_refused(
    live: LiveServer, key: str, model: Path, tmp_path: Path, shard: str
) -> None:
    folder = sharded(model, tmp_path / "m", {"lm_head.weight": shard})
    (folder / "notes.txt").write_text("not weights")
    body = _refused(
        live, _import(live, key, folder, "sharded"), f"'model.safetensors.index.json' names the shard '{shard}'"
    )
    assert body["errors"][0]["file"] == "model.safetensors.index.json"


def test_weights_whose_offsets_pass_the_end_of_the_file_are_refused(
    live: LiveServer, key: str, model: Path, tmp_path: Path
) -> None:
    folder = copy_with(model, tmp_path / "m")
    header = {"lm_head.weight": {"dtype": "F32", "shape": [300, 32], "data_offsets": [0, 1 << 30]}}
    with_header(folder / "model.safetensors", header)
    body = _refused(live, _import(live, key, folder, "offsets"), "'model.safetensors' is not a valid safetensors file")
    assert body["errors"][0]["file"] == "model.safetensors"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"num_attention_heads": 0}, "'config.json' sets 'num_attention_heads' to 0: it must be a positive integer"),
        ({"hidden_size": -1}, "'config.json' sets 'hidden_size' to -1: it must be a positive integer"),
        ({"eos_token_id": "</s>"}, "'config.json' sets 'eos_token_id' to </s>: a token id is an integer"),
        ({"max_position_embeddings": 0}, "'config.json' sets 'max_position_embeddings' to 0"),
    ],
)
def test_config_values_no_model_runs_with_are_refused(
    live: LiveServer, key: str, model: Path, tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    body = _refused(live, _import(live, key, copy_with(model, tmp_path / "m", {"config.json": change}), "cfg"), said)
    assert body["errors"][0]["file"] == "config.json"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        # Files each well-formed, that only loading shows do not fit together: a 400 on every call before.
        ({"config.json": {"hidden_size": 64}}, "tensors of another shape"),
        (
            {"chat_template.jinja": b"{{ raise_exception('no conversation, ever') }}"},
            "the chat template (tokenizer_config.json or chat_template.jinja) fails on a two-message conversation",
        ),
    ],
)
def test_a_model_that_does_not_load_and_run_in_the_check_child_is_refused(
    live: LiveServer, key: str, model: Path, tmp_path: Path, changes: dict[str, Any], said: str
) -> None:
    _refused(live, _import(live, key, copy_with(model, tmp_path / "m", changes), "broken"), said)


def test_a_model_that_imports_is_served_without_errors(live: LiveServer, key: str, model: Path, tmp_path: Path) -> None:
    response = _import(live, key, sharded(model, tmp_path / "m", {}), "tiny-lm")
    assert response.status_code == 201, response.text
    imported = response.json()
    assert imported["family"] == "causal-lm"
    signature = imported["signature"]
    assert signature["context_length"] == 64 and signature["vocab_size"] == 300
    assert signature["eos_token_ids"] == [0] and signature["has_chat_template"] is True
    assert imported["metrics"]["parameters"] > 30_000 and imported["metrics"]["check_seconds"] > 0

    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=120) as client:
        chat = client.chat.completions.create(
            model="tiny-lm", messages=[{"role": "user", "content": "Hello!"}], max_tokens=5, temperature=0
        )
        assert chat.choices[0].finish_reason in {"stop", "length"}
        sampled = client.completions.create(model="tiny-lm", prompt="The quick", max_tokens=5, n=2, seed=1)
        assert len(sampled.choices) == 2


def test_a_gguf_file_that_does_not_convert_is_refused_naming_it(live: LiveServer, key: str, tmp_path: Path) -> None:
    # The conversion's message was the library's own text, which names the server's upload folder.
    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "broken.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 64)
    _refused(live, _import(live, key, folder, "broken-gguf"), "'broken.gguf'")
