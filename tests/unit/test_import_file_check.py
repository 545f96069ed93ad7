"""An import's large files are checked in a child process, with the verdicts the in-process checks give.

Parsing a JSON file of tens of megabytes (or loading it as a tokenizer) holds the interpreter for seconds, which
in the API process stalls every request (issue 8, finding 6). ``scan_directory`` sends every file past
``OFF_PROCESS_BYTES`` to one child (``maas.registry.import_file_check``); these tests check that the child runs
(once an import), and that what it refuses is refused in the words ``check_file`` and ``check_tokenizer`` use
when they run here, for files a little past the threshold.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from maas.errors import InvalidInput
from maas.registry import import_files
from maas.registry.import_files import OFF_PROCESS_BYTES, check_file, check_tokenizer, scan_directory
from tests.hostile_models import tokenizer_json

PADDING = ["x" * 1000] * (OFF_PROCESS_BYTES // 1000 + 100)  # a JSON list just past the threshold


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``what`` of every child process the scan starts."""
    started: list[str] = []
    real = import_files.run_child

    def spy(module: str, args: list[str], out: Path, **kwargs: Any) -> dict[str, Any]:
        started.append(kwargs["what"])
        return real(module, args, out, **kwargs)

    monkeypatch.setattr(import_files, "run_child", spy)
    return started


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _in_process(path: Path, name: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        check_file(path, name)
    return refused.value


def _large(value: dict[str, Any]) -> bytes:
    return json.dumps({"padding": PADDING, **value}).encode()


def _safetensors(*, overlap: bool) -> bytes:
    """A safetensors file with a header past the threshold; with ``overlap`` two tensors share their bytes."""
    count = OFF_PROCESS_BYTES // 60 + 100
    header = {f"layer.{i:06d}.weight": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(count)}
    if overlap:
        header["layer.000001.weight"]["data_offsets"] = [0, 1]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(count)


LARGE_REFUSED = {
    "auto_map at depth": ("tokenizer_config.json", _large({"a": {"b": [{"auto_map": {"AutoModel": "x.Y"}}]}})),
    "trust_remote_code": ("tokenizer_config.json", _large({"trust_remote_code": True})),
    "nested too deep": ("tokenizer_config.json", b"[" * 100 + b"]" * 100 + b" " * (OFF_PROCESS_BYTES + 1)),
    "not JSON": ("tokenizer_config.json", _large({})[:-1]),
    "not UTF-8": ("tokenizer_config.json", b'{"a": "' + b"\xff" * (OFF_PROCESS_BYTES + 1) + b'"}'),
    "a number too long": ("tokenizer_config.json", b"1" * (OFF_PROCESS_BYTES + 1)),
    "overlapping tensors": ("model.safetensors", _safetensors(overlap=True)),
}


@pytest.mark.parametrize("case", list(LARGE_REFUSED))
def test_a_large_file_is_refused_by_the_child_in_the_same_words(tmp_path: Path, children: list[str], case: str) -> None:
    name, data = LARGE_REFUSED[case]
    folder = _write(tmp_path / "model", {name: data})
    with pytest.raises(InvalidInput) as refused:
        scan_directory(folder)
    here = _in_process(folder / name, name)
    assert (refused.value.detail, refused.value.errors) == (here.detail, here.errors)
    assert children == [f"checking '{name}'"]
    assert str(tmp_path) not in refused.value.detail


def test_a_large_config_naming_auto_map_is_refused(tmp_path: Path, children: list[str]) -> None:
    folder = _write(tmp_path / "model", {"tokenizer_config.json": _large({"auto_map": {"AutoModel": "modeling.Evil"}})})
    with pytest.raises(InvalidInput) as refused:
        scan_directory(folder)
    assert refused.value.detail == (
        "'tokenizer_config.json' sets 'auto_map': the model needs its own Python code to load, which is never run "
        "here; import a model that standard architectures load"
    )
    assert refused.value.errors[0]["file"] == "tokenizer_config.json"
    assert len(children) == 1


@pytest.mark.parametrize("name", ["config.json", "modules.json", "model.safetensors.index.json"])
def test_a_config_over_a_megabyte_is_refused_before_it_is_parsed(
    tmp_path: Path, children: list[str], name: str
) -> None:
    # Configs are parsed again in the server's process after the scan; real ones are kilobytes.
    folder = _write(tmp_path / "model", {name: _large({"model_type": "bert"})})
    with pytest.raises(InvalidInput, match=f"'{name}' is larger than 1 MB"):
        scan_directory(folder)
    assert children == []


def test_every_large_file_of_an_import_is_checked_in_one_child(tmp_path: Path, children: list[str]) -> None:
    tokenizer = json.loads(tokenizer_json())
    tokenizer["model"]["vocab"].update({f"word{i:07d}": 9 + i for i in range(OFF_PROCESS_BYTES // 15)})
    folder = _write(
        tmp_path / "model",
        {
            "tokenizer_config.json": _large({"model_type": "bert"}),
            "tokenizer.json": json.dumps(tokenizer).encode(),
            "model.safetensors": _safetensors(overlap=False),
            "special_tokens_map.json": b"{}",
        },
    )
    found = scan_directory(folder)
    assert children == ["checking 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'"]
    assert set(found.files) == {
        "tokenizer_config.json",
        "tokenizer.json",
        "model.safetensors",
        "special_tokens_map.json",
    }
    assert found.tokenizer_verdicts == {"tokenizer.json": None}
    found.check_tokenizer()  # loaded by the child: passes here without a second load
    assert len(children) == 1


def test_a_large_json_that_is_not_a_tokenizer_is_refused_in_the_same_words(tmp_path: Path, children: list[str]) -> None:
    folder = _write(tmp_path / "model", {"tokenizer.json": _large({"model": {"type": "WordLevel"}})})
    found = scan_directory(folder)  # valid JSON: the scan passes; the load check is the importer's next step
    with pytest.raises(InvalidInput) as refused:
        found.check_tokenizer("tokenizer.json")
    with pytest.raises(InvalidInput) as here:
        check_tokenizer(folder / "tokenizer.json")
    assert (refused.value.detail, refused.value.errors) == (here.value.detail, here.value.errors)
    assert "'tokenizer.json' is not a tokenizer" in refused.value.detail
    assert len(children) == 1


def test_small_files_are_checked_here_without_a_child(tmp_path: Path, children: list[str]) -> None:
    folder = _write(
        tmp_path / "model", {"tokenizer.json": tokenizer_json(), "config.json": b'{"auto_map": {"AutoModel": "m.M"}}'}
    )
    with pytest.raises(InvalidInput, match=r"'config\.json' sets 'auto_map'"):
        scan_directory(folder)
    (folder / "config.json").write_bytes(b'{"model_type": "bert"}')
    found = scan_directory(folder)
    found.check_tokenizer()
    assert children == [] and found.tokenizer_verdicts == {}


@pytest.mark.parametrize(
    ("files", "first", "child"),
    [
        # The large file comes first in the scan's order: the child's verdict is the one raised.
        ({"added_tokens.json": _large({"auto_map": {}}), "config.json": b'{"auto_map": {}}'}, "added_tokens.json", 1),
        # A small file comes first: it is refused here, before any child starts.
        ({"added_tokens.json": b'{"auto_map": {}}', "config.json": _large({"auto_map": {}})}, "added_tokens.json", 0),
        # A refused name comes first: no file after it is read at all.
        ({"a.bin": b"\x80\x04", "config.json": _large({"auto_map": {}})}, "a.bin", 0),
    ],
)
def test_the_first_refused_file_is_named_as_before(
    tmp_path: Path, children: list[str], files: dict[str, bytes], first: str, child: int
) -> None:
    with pytest.raises(InvalidInput) as refused:
        scan_directory(_write(tmp_path / "model", files))
    assert refused.value.errors[0]["file"] == first
    assert len(children) == child


def test_a_child_past_its_time_refuses_naming_the_files_not_the_path(
    tmp_path: Path, children: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_files, "_CHECK_BASE_S", 0.001)
    monkeypatch.setattr(import_files, "_CHECK_S_PER_BYTE", 0.0)
    folder = _write(tmp_path / "model", {"vocab.json": _large({})})
    with pytest.raises(InvalidInput, match=r"^checking 'vocab\.json' took longer than 0 s; it was abandoned$"):
        scan_directory(folder)
