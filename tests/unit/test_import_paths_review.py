"""Review of the import's path checks (issue 8): no config an import brings makes a loader open a server file,
and a refusal reads the same whether the file it names exists or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from maas.errors import InvalidInput
from maas.registry import causal_lm_files, import_prepare, importer
from maas.registry.causal_lm_files import check_causal_lm_files, folder_files
from maas.registry.import_convert import sentence_transformer_layout
from maas.registry.import_files import read_json, scan_directory
from maas.registry.safetensors_check import ModelFileError
from tests.hostile_models import config, tokenizer_json


def _bert_folder(folder: Path, **values: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(config(**values))
    (folder / "tokenizer.json").write_bytes(tokenizer_json())
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(folder / "x.safetensors"))
    return folder


def _refusal(folder: Path, work: Path) -> str:
    with pytest.raises(InvalidInput) as refused:
        importer.prepare(scan_directory(folder), work, digest="d")
    return refused.value.detail


def test_an_embedding_config_naming_other_weights_is_refused_the_same_whether_they_exist(tmp_path: Path) -> None:
    # A skipped shard map still on disk, named by transformers_weights, led the conversion to a victim's tensors.
    victim = tmp_path / "victim.safetensors"
    save_file({"secret": np.ones(2, dtype=np.float32)}, str(victim))
    details = []
    for target in (victim, tmp_path / "absent.safetensors"):
        folder = _bert_folder(tmp_path / f"m-{target.stem}", transformers_weights="evil.safetensors.index.json")
        index = {"metadata": {}, "weight_map": {"secret": str(target)}}
        (folder / "evil.safetensors.index.json").write_text(json.dumps(index))
        details.append(_refusal(folder, tmp_path / f"w-{target.stem}"))
    assert "transformers_weights" in details[0]
    assert details[0] == details[1]
    assert str(tmp_path) not in details[0]


def test_an_embedding_conversion_sees_only_the_kept_files_and_the_layout_read_by_the_importer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _bert_folder(tmp_path / "m")
    (folder / "evil.safetensors.index.json").write_text("{}")  # skipped by the scan, still on disk
    (folder / "modules.json").write_text(
        json.dumps([{"type": "Pooling", "path": "pool"}, {"type": "Normalize", "path": "n"}])
    )
    (folder / "pool").mkdir()
    (folder / "pool" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    seen: dict[str, Any] = {}

    def conversion(args: list[str], out: Path, **_: Any) -> dict[str, Any]:
        seen["files"] = sorted(folder_files(Path(args[1])))
        seen["args"] = args[2:]
        raise InvalidInput("stop here")

    monkeypatch.setattr(import_prepare, "_run_conversion", conversion)
    assert _refusal(folder, tmp_path / "work") == "stop here"
    assert seen["files"] == ["config.json", "modules.json", "tokenizer.json", "x.safetensors"]
    assert seen["args"] == ["--pooling", "cls", "--normalise"]


def test_a_pooling_config_in_any_module_folder_has_the_config_size_limit(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "Pooling", "path": "pool"}]))
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text(json.dumps({"pad": "x" * (2 << 20)}))
    with pytest.raises(InvalidInput, match=r"'pool/config\.json' is larger than 1 MB"):
        sentence_transformer_layout(tmp_path)


def test_a_tokenizer_config_has_its_own_4_mb_limit(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"added_tokens_decoder": {"0": {"content": "x" * (2 << 20)}}}))
    assert read_json(path, "tokenizer_config.json")["added_tokens_decoder"]  # Gemma 3's is 1.2 MB
    path.write_text(json.dumps({"pad": "x" * (5 << 20)}))
    with pytest.raises(InvalidInput, match="larger than 4 MB"):
        read_json(path, "tokenizer_config.json")


def _lm_files(tmp_path: Path, tokenizer_config: dict[str, Any]) -> dict[str, Path]:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_json())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder_files(tmp_path)


@pytest.mark.parametrize(
    "tokenizer_config",
    [
        {"tokenizer_class": "GPT2Tokenizer", "gguf_file": "{target}"},
        {"vocab_file": "{target}"},
        {"merges_file": "{target}"},
        {"tokenizer_file": "{target}"},
        {"spm_files": ["{target}"]},
        {"merges": "{target}"},
        {"vocab": "{target}"},
        {"tokenizer_class": "BertTokenizer"},
    ],
)
def test_a_tokenizer_config_names_no_file_and_its_refusal_does_not_tell_whether_one_exists(
    tmp_path: Path, tokenizer_config: dict[str, Any]
) -> None:
    details = []
    for target in ("/etc/hostname", "/no/such/file"):
        folder = tmp_path / str(len(details))
        folder.mkdir()
        text = json.dumps(tokenizer_config).replace("{target}", target)
        with pytest.raises(ModelFileError) as refused:
            check_causal_lm_files(_lm_files(folder, json.loads(text)))
        details.append(str(refused.value))
    assert details[0] == details[1]
    assert "tokenizer_config.json" in details[0]


@pytest.mark.parametrize(
    "tokenizer_config",
    [
        {},
        {"tokenizer_class": "PreTrainedTokenizerFast", "special_tokens_map_file": None},
        {"tokenizer_class": "TokenizersBackend"},
        {"tokenizer_class": "GPT2Tokenizer"},
        {"tokenizer_class": "Qwen2TokenizerFast"},
        {"tokenizer_class": "LlamaTokenizerFast", "fast_tokenizer_files": ["tokenizer.json"]},
    ],
)
def test_a_tokenizer_config_of_a_real_model_passes(tmp_path: Path, tokenizer_config: dict[str, Any]) -> None:
    check_causal_lm_files(_lm_files(tmp_path, tokenizer_config))


def test_the_upload_thread_sizes_a_causal_lms_weights_without_parsing_their_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scan checked every header (a large one in a child) and the load check's child checks them again.
    (tmp_path / "m").mkdir()
    files = _lm_files(tmp_path / "m", {})
    found = scan_directory(tmp_path / "m")
    assert sorted(found.files) == sorted(files)

    def parsed(*_: Any) -> None:
        raise AssertionError("a safetensors header was parsed in the API process")

    monkeypatch.setattr(causal_lm_files, "check_safetensors", parsed)
    monkeypatch.setattr(import_prepare, "run_child", lambda *_a, **_k: {"checked": True})
    main, report = import_prepare._checked_causal_lm(found, tmp_path / "work", "source")
    assert (main, report) == ("model.safetensors", {"checked": True})
