"""A safetensors file is checked in full from its header at import, and a causal LM's configs and shard map
before any loader reads them: what used to pass import and then fail (or reach torch.load) at serve time."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from maas.errors import InvalidInput
from maas.registry.causal_lm_files import (
    SIZE_KEYS,
    TOKEN_ID_KEYS,
    check_causal_lm_files,
    check_config,
    check_shard_index,
    folder_files,
)
from maas.registry.import_files import check_file
from maas.registry.safetensors_check import ModelFileError, check_safetensors

W = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
B = {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}


def _file(tmp_path: Path, header: dict[str, Any] | bytes, data: int = 24, name: str = "model.safetensors") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * data)
    return path


def test_a_well_formed_file_lists_its_tensors(tmp_path: Path) -> None:
    path = _file(tmp_path, {"__metadata__": {"format": "pt"}, "w": W, "b": B})
    tensors = check_safetensors(path, "model.safetensors")
    assert tensors["w"].shape == (2, 2) and tensors["b"].dtype == "BF16"
    check_file(path, "model.safetensors")  # the import's scan accepts it
    assert check_safetensors(_file(tmp_path, {}, data=0, name="empty.safetensors"), "empty.safetensors") == {}


@pytest.mark.parametrize(
    ("header", "data", "reason"),
    [
        ({"w": W, "b": {**B, "data_offsets": [16, 4096]}}, 24, "'b' is 4080 bytes long, but BF16"),
        ({"w": W, "b": {**B, "shape": [2048], "data_offsets": [16, 4112]}}, 24, "pass the end of the file"),
        ({"w": W, "b": {**B, "data_offsets": [8, 16]}}, 24, "overlap"),
        ({"w": W, "b": {**B, "data_offsets": [20, 28]}}, 28, "leave a gap"),
        ({"w": W}, 24, "do not fill the file"),
        ({"w": {**W, "dtype": "F33"}}, 16, 'dtype "F33"'),
        ({"w": {**W, "shape": [2, -2]}}, 16, "shape that is not a list of non-negative integers"),
        ({"w": {**W, "shape": [True, 2]}}, 16, "shape that is not a list"),
        ({"w": {**W, "data_offsets": [0]}}, 16, "data_offsets that are not two"),
        ({"w": {**W, "data_offsets": [16, 0]}}, 16, "ends (byte 0) before it begins"),
        ({"w": "F32"}, 16, "not described by an object"),
        ({"__metadata__": {"n": 1}, "w": W}, 16, "__metadata__ is not an object of strings"),
        (b'{"w": 1, "w": 2}', 0, "appears twice"),
        (b"[" * 100_000 + b"]" * 100_000, 0, "not a JSON object"),
        (b"{" + b'"a":{' * 100_000 + b"}" * 100_001, 0, "not JSON"),
        (b"{\xff}", 0, "not JSON"),
    ],
)
def test_a_file_breaking_the_format_is_refused_naming_the_file_and_tensor(
    tmp_path: Path, header: dict[str, Any] | bytes, data: int, reason: str
) -> None:
    # Before, the scan only checked that the header was a JSON object: these imported, and the model then failed
    # at serve time (offsets past the end of the file were a 500 on every call).
    path = _file(tmp_path, header, data)
    with pytest.raises(InvalidInput) as refused:
        check_file(path, "model.safetensors")
    assert reason in refused.value.detail
    assert refused.value.detail.startswith("'model.safetensors' is not a valid safetensors file")
    assert refused.value.errors[0]["file"] == "model.safetensors"
    assert str(tmp_path) not in refused.value.detail


def test_a_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelFileError, match="does not fit in the file of 10 bytes"):
        check_safetensors(path, "model.safetensors")
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ModelFileError, match="shorter than the 8 bytes"):
        check_safetensors(path, "model.safetensors")


def _files(tmp_path: Path, *names: str) -> dict[str, Path]:
    files = {}
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        files[name] = path
    return files


@pytest.mark.parametrize(
    ("shard", "reason"),
    [
        ("../../outside.safetensors", "plain file name inside the model's folder"),
        ("/etc/passwd", "plain file name inside the model's folder"),
        ("sub/../model-1.safetensors", "plain file name inside the model's folder"),
        ("./model-1.safetensors", "plain file name inside the model's folder"),
        ("sub\\model-1.safetensors", "plain file name inside the model's folder"),
        ("pytorch_model.bin", "the model has no such file"),
        ("notes.txt", "a shard must be a .safetensors file"),
        ("missing.safetensors", "the model has no such file"),
    ],
)
def test_a_shard_map_may_name_only_the_models_own_safetensors_files(tmp_path: Path, shard: str, reason: str) -> None:
    files = _files(tmp_path, "model-1.safetensors", "notes.txt")
    index = {"metadata": {}, "weight_map": {"a": "model-1.safetensors", "b": shard}}
    with pytest.raises(ModelFileError) as refused:
        check_shard_index(index, files)
    assert refused.value.file == "model.safetensors.index.json"
    assert f"names the shard '{shard}' (for tensor 'b')" in str(refused.value) and reason in str(refused.value)


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        ([], "must hold a JSON object"),
        ({"metadata": {}}, "needs a 'weight_map' object"),
        ({"metadata": {}, "weight_map": {}}, "needs a 'weight_map' object"),
        ({"metadata": {}, "weight_map": ["model-1.safetensors"]}, "needs a 'weight_map' object"),
        ({"weight_map": {"a": "model-1.safetensors"}}, "needs a 'metadata' object"),
        ({"metadata": {}, "weight_map": {"a": 7}}, "names 7 as the shard of tensor 'a': not a file name"),
    ],
)
def test_a_shard_map_of_another_shape_is_refused(tmp_path: Path, index: Any, reason: str) -> None:
    with pytest.raises(ModelFileError, match=reason):
        check_shard_index(index, _files(tmp_path, "model-1.safetensors"))


def test_the_shards_of_a_good_map_are_the_weights(tmp_path: Path) -> None:
    files = {"config.json": tmp_path / "config.json", "model.safetensors.index.json": tmp_path / "index.json"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": 4}))
    index = {"metadata": {}, "weight_map": {"w": "a/one.safetensors", "b": "two.safetensors", "c": "two.safetensors"}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "a").mkdir()
    files["a/one.safetensors"] = _file(tmp_path / "a", {"w": W}, data=16, name="one.safetensors")
    files["two.safetensors"] = _file(tmp_path, {"b": {**B, "data_offsets": [0, 8]}}, data=8, name="two.safetensors")
    checked = check_causal_lm_files(files)
    assert checked.weights == ["a/one.safetensors", "two.safetensors"]
    assert checked.weights_bytes == files["a/one.safetensors"].stat().st_size + files["two.safetensors"].stat().st_size
    assert set(folder_files(tmp_path)) == {"config.json", "index.json", "a/one.safetensors", "two.safetensors"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"num_attention_heads": 0}, "'num_attention_heads' to 0: it must be a positive integer"),
        ({"hidden_size": -1}, "'hidden_size' to -1: it must be a positive integer"),
        ({"n_head": 2.5}, "'n_head' to 2.5"),
        ({"max_position_embeddings": 0}, "'max_position_embeddings' to 0"),
        ({"vocab_size": "300"}, "'vocab_size' to 300"),
        ({"num_hidden_layers": True}, "'num_hidden_layers' to true"),
        ({"intermediate_size": 10**12}, "larger than any model's"),
        ({"eos_token_id": "</s>"}, "'eos_token_id' to </s>: a token id is an integer"),
        ({"eos_token_id": [1, 2.5]}, "'eos_token_id' to [1, 2.5]"),
        ({"pad_token_id": {"id": 1}}, "'pad_token_id'"),
        ({"architectures": "LlamaForCausalLM"}, "'architectures' to something other than a list"),
        ({"model_type": ["llama"]}, "'model_type' to something other than a name"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantised checkpoints need another loader"),
        ({"transformers_weights": "adapter_model.bin"}, "the weights must be model.safetensors"),
        ({"auto_map": {"AutoModelForCausalLM": "x.Y"}}, "its own Python code"),
        ({"attn_implementation": "kernels-community/flash-attn"}, "a kernel fetched from the Hub is code"),
    ],
)
def test_config_values_a_model_cannot_run_with_are_refused(change: dict[str, Any], reason: str) -> None:
    config = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "eos_token_id": [1, 2], **change}
    with pytest.raises(ModelFileError) as refused:
        check_config(config)
    assert str(refused.value).startswith("'config.json' sets ") and reason in str(refused.value)
    if set(change) <= {*SIZE_KEYS, *TOKEN_ID_KEYS}:
        check_config({**config, **dict.fromkeys(change)})  # unset (null) they are fine


def test_generation_and_tokenizer_configs_are_checked_too(tmp_path: Path) -> None:
    files = _files(tmp_path, "config.json", "generation_config.json", "tokenizer_config.json")
    files["model.safetensors"] = _file(tmp_path, {"w": W}, data=16)
    files["config.json"].write_text(json.dumps({"model_type": "llama"}))
    files["generation_config.json"].write_text(json.dumps({"eos_token_id": [1, "2"]}))
    files["tokenizer_config.json"].write_text(json.dumps({"fast_tokenizer_files": ["../../tokenizer.4.0.json"]}))
    with pytest.raises(ModelFileError, match=re.escape("'generation_config.json' sets 'eos_token_id'")):
        check_causal_lm_files(files)
    files["generation_config.json"].write_text(json.dumps({"eos_token_id": [1, 2]}))
    with pytest.raises(ModelFileError, match=re.escape("'tokenizer_config.json' names ../../tokenizer.4.0.json")):
        check_causal_lm_files(files)
    files["tokenizer_config.json"].write_text("{}")
    assert check_causal_lm_files(files).weights == ["model.safetensors"]
    del files["model.safetensors"]
    with pytest.raises(ModelFileError, match=re.escape("weights must be model.safetensors, or the shards")):
        check_causal_lm_files(files)


def test_a_conversion_never_starts_on_a_folder_whose_shard_map_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An embedding model converts with transformers too: the same shard map reached ../../x or a .bin there.
    from maas.registry import import_prepare

    def started(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the conversion child was started")

    monkeypatch.setattr(import_prepare, "run_child", started)
    folder = tmp_path / "model"
    folder.mkdir()
    _file(folder, {"w": W}, data=16, name="model-1.safetensors")
    index = {"metadata": {}, "weight_map": {"w": "model-1.safetensors", "b": "../outside.bin"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput) as refused:
        import_prepare._run_conversion(["embedding", str(folder)], tmp_path / "out")
    assert "'model.safetensors.index.json' names the shard '../outside.bin'" in refused.value.detail
    assert refused.value.errors[0]["file"] == "model.safetensors.index.json"
