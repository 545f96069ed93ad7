"""The causal-LM loader refuses, in our words, what used to reach torch.load or fail every call at serve time;
the import's load check (the same loader, then the serving engine) refuses a model that loads but cannot run.

The loader's checks are the defence in depth for models registered before the import checked them (the
import refuses all of these first: tests/e2e/test_causal_lm_import_attacks.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maas.errors import InvalidInput
from tests.tiny_causal_lm import copy_with, sharded, tiny_llama, with_header

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def reached(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(torch, "load", reached)


def _refusal(directory: Path) -> str:
    from maas.serving.generation.loader import load_causal_lm

    with pytest.raises(InvalidInput) as refused:
        load_causal_lm(directory)
    detail = refused.value.detail
    assert "/tmp" not in detail and str(directory) not in detail  # no server path, whatever went wrong
    return detail


@pytest.mark.usefixtures("no_unpickling")
@pytest.mark.parametrize("shard", ["evil.bin", "../outside.bin", "../outside.safetensors", "/etc/passwd", "gone.bin"])
def test_a_shard_map_never_leads_the_loader_out_of_the_folder_or_to_a_pickle(
    model: Path, tmp_path: Path, shard: str
) -> None:
    # The loader opened any shard the index named, joined to the folder; one not ending in .safetensors it
    # handed to torch.load (an UnpicklingError in the API process, or worse).
    folder = sharded(model, tmp_path / "m", {"model.embed_tokens.weight": shard})
    (folder / "evil.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle, beside the weights
    (tmp_path / "outside.bin").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "outside.safetensors").write_bytes((folder / "model-00001-of-00001.safetensors").read_bytes())
    detail = _refusal(folder)
    assert f"'model.safetensors.index.json' names the shard '{shard}'" in detail


@pytest.mark.usefixtures("no_unpickling")
def test_a_sharded_model_loads_from_its_safetensors_only(model: Path, tmp_path: Path) -> None:
    from maas.serving.generation.loader import load_causal_lm

    folder = sharded(model, tmp_path / "m", {})
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # never a fallback
    assert load_causal_lm(folder).context_length == 64


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"num_attention_heads": 0}, "'config.json' sets 'num_attention_heads' to 0: it must be a positive integer"),
        ({"hidden_size": -1}, "'config.json' sets 'hidden_size' to -1"),
        ({"eos_token_id": "</s>"}, "'config.json' sets 'eos_token_id' to </s>: a token id is an integer"),
        ({"max_position_embeddings": 0}, "'config.json' sets 'max_position_embeddings' to 0"),
    ],
)
def test_config_values_that_failed_every_call_are_refused_naming_the_key(
    model: Path, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    # Each was a 500 on every call (a ZeroDivisionError, a ValueError reading the eos ids, ...).
    assert reason in _refusal(copy_with(model, tmp_path / "m", {"config.json": change}))


def test_offsets_past_the_end_of_the_weights_are_refused(model: Path, tmp_path: Path) -> None:
    folder = copy_with(model, tmp_path / "m")
    with_header(
        folder / "model.safetensors",
        {"lm_head.weight": {"dtype": "F32", "shape": [300, 32], "data_offsets": [0, 1 << 30]}},
    )
    assert "'model.safetensors' is not a valid safetensors file" in _refusal(folder)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model.safetensors": None}, "weights must be model.safetensors, or the shards"),
        ({"config.json": b"{not json"}, "'config.json' is not valid JSON"),
        ({"config.json": {"model_type": "evil"}}, "config.json does not describe a model this server can build"),
        ({"config.json": {"model_type": "vit"}}, "model_type 'vit', which has no causal LM architecture here"),
        ({"tokenizer.json": b"{}"}, "tokenizer.json (with tokenizer_config.json) is not a tokenizer"),
    ],
)
def test_files_that_do_not_load_are_said_in_our_words(
    model: Path, tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    # transformers' own messages name the server's folder ("Unrecognized model in /tmp/...", "no file named
    # model.safetensors found in directory /tmp/..."), and a missing file was an OSError: a 500.
    assert reason in _refusal(copy_with(model, tmp_path / "m", changes))


def test_the_load_check_reports_what_serving_will_see(model: Path) -> None:
    from maas.serving.generation.load_check import check_causal_lm

    report = check_causal_lm(model)
    assert report["architecture"] == "LlamaForCausalLM"
    assert report["context_length"] == 64 and report["vocab_size"] == 300
    assert report["eos_token_ids"] == [0] and report["has_chat_template"] is True
    assert report["parameters"] > 30_000


def _tokenizer_with_token(model: Path, token_id: int) -> bytes:
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    extra = {"id": token_id, "content": "<|far|>", "single_word": False, "lstrip": False, "rstrip": False}
    tokenizer["added_tokens"].append({**extra, "normalized": False, "special": True})
    return json.dumps(tokenizer).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"tokenizer_config.json": {"chat_template": "{{ raise_exception('no conversation, ever') }}"}},
            "the chat template (tokenizer_config.json or chat_template.jinja) fails on a two-message conversation: "
            "no conversation, ever",
        ),
        ({"tokenizer.json": "far token"}, "but the model's embedding (config.json vocab_size) has only 300 rows"),
        ({"model.safetensors": "nan"}, "scores for a test prompt are not finite numbers"),
    ],
)
def test_a_model_that_loads_but_cannot_serve_is_refused_by_the_check(
    model: Path, tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from maas.serving.generation.load_check import check_causal_lm

    folder = copy_with(model, tmp_path / "m", {k: v for k, v in changes.items() if isinstance(v, dict)})
    (folder / "chat_template.jinja").unlink()
    if "tokenizer.json" in changes:
        (folder / "tokenizer.json").write_bytes(_tokenizer_with_token(model, 1000))
    if "model.safetensors" in changes:
        weights = load_file(folder / "model.safetensors")
        weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], float("nan"))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidInput) as refused:
        check_causal_lm(folder)
    assert reason in refused.value.detail


def test_the_import_children_cannot_unpickle(tmp_path: Path) -> None:
    import pickle

    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    (tmp_path / "data.pkl").write_bytes(pickle.dumps([1, 2]))
    script = (
        "import pickle, sys, torch\n"
        "from maas.registry.child_guard import UnpicklingRefused, forbid_unpickling\n"
        "forbid_unpickling()\n"
        "data = open(sys.argv[2], 'rb').read()\n"
        "for load in (lambda: torch.load(sys.argv[1], weights_only=True), lambda: pickle.loads(data),\n"
        "             lambda: pickle.Unpickler(open(sys.argv[2], 'rb')).load()):\n"
        "    try:\n"
        "        load()\n"
        "    except UnpicklingRefused:\n"
        "        continue\n"
        "    sys.exit('unpickled')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "weights.pt"), str(tmp_path / "data.pkl")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
