"""Which files a pretrained model may bring, and the checks that refuse anything that could run code.

Safe formats only (DESIGN decision 5): weights in safetensors, GGUF or ONNX; configs and tokenizers in JSON
or plain text. Refused, each with a message naming the file:

- pickles and anything that unpickles (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``, ``*.joblib``,
  ``*.npy``/``*.npz``): loading them runs arbitrary code;
- code (``*.py``, compiled modules, shared libraries);
- any JSON config naming ``auto_map`` or ``trust_remote_code`` (at any depth): they ask the loader to
  download or run the model's own Python classes.

Other files (README.md, licences, a training-data description) are not code and not needed: they are
skipped and reported, never stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from maas.errors import InvalidInput
from maas.registry.safetensors_check import ModelFileError, check_safetensors

# Exact relative names of metadata files we keep (sentence-transformers and Hugging Face layouts).
SAFE_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "model.safetensors.index.json",
    }
)
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx")
# Formats that execute code when loaded: refused outright, never skipped quietly.
CODE_SUFFIXES = (
    ".bin",
    ".pt",
    ".pth",
    ".pkl",
    ".pickle",
    ".ckpt",
    ".joblib",
    ".npy",
    ".npz",
    ".py",
    ".pyc",
    ".pyo",
    ".pyd",
    ".so",
    ".dll",
    ".dylib",
)
_REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")
_MAX_JSON_BYTES = 64 * 1024 * 1024  # tokenizer.json of a large vocabulary is tens of MB
# Configs and tokenizers nest a handful of levels; far deeper is an attack on every recursive reader after us.
MAX_JSON_DEPTH = 64
_GGUF_MAGIC = b"GGUF"


def refused(detail: str, name: str | None = None) -> InvalidInput:
    extra: dict[str, Any] = {"file": name} if name is not None else {}
    return InvalidInput(detail, errors=[{"loc": ["body", "files"], "msg": detail, **extra}])


@dataclass
class ModelFiles:
    """The accepted files of a model directory, by relative name ('1_Pooling/config.json'), and what was skipped."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return name in self.files

    def json(self, name: str) -> dict[str, Any]:
        value = read_json(self.files[name], name)
        if not isinstance(value, dict):
            raise refused(f"'{name}' must hold a JSON object", name)
        return value

    def with_suffix(self, suffix: str) -> list[str]:
        return sorted(name for name in self.files if name.endswith(suffix))


def classify(name: str) -> str:
    """'keep', 'skip' or 'refuse' for a relative file name; see the module docstring."""
    lower = name.lower()
    if lower.endswith(CODE_SUFFIXES):
        return "refuse"
    if name in SAFE_NAMES or lower.endswith(WEIGHT_SUFFIXES):
        return "keep"
    return "skip"


def _why_refused(name: str) -> str:
    if name.lower().endswith((".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib")):
        return f"'{name}' is code; a model may bring weights and configs only, never code to run"
    return (
        f"'{name}' is a pickle-based format that runs code when loaded; convert the weights to safetensors "
        "(or ONNX / GGUF) and import that instead"
    )


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests deeper than MAX_JSON_DEPTH (iterative: the check cannot exhaust the stack)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_JSON_DEPTH:
                    return True
                pending.append((child, depth + 1))
    return False


def parse_json(data: bytes, name: str) -> Any:
    """JSON from a model file; InvalidInput naming the file, in our words, for anything a reader would choke on."""
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise refused(f"'{name}' is not valid JSON (line {exc.lineno}, column {exc.colno})", name) from None
    except UnicodeDecodeError:
        raise refused(f"'{name}' is not valid JSON (it is not UTF-8 text)", name) from None
    except RecursionError:
        raise refused(f"'{name}' nests deeper than {MAX_JSON_DEPTH} levels; it is not a model file", name) from None
    except ValueError:  # an integer of thousands of digits: more than Python converts
        raise refused(f"'{name}' holds a number too long to read", name) from None
    if _too_deep(value):
        raise refused(f"'{name}' nests deeper than {MAX_JSON_DEPTH} levels; it is not a model file", name)
    return value


def read_json(path: Path, name: str) -> Any:
    """The JSON in ``path`` (``name`` is how the model's archive calls it: messages never show server paths)."""
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise refused(f"'{name}' is larger than {_MAX_JSON_BYTES // (1024 * 1024)} MB; is it really a config?", name)
    return parse_json(path.read_bytes(), name)


def check_tokenizer(path: Path, name: str = "tokenizer.json") -> None:
    """Refuse a ``tokenizer.json`` the tokenizers library does not load (it would fail on every call instead)."""
    try:
        Tokenizer.from_file(str(path))
    except Exception:  # tokenizers raises plain Exception with serde's text; our words instead
        raise refused(
            f"'{name}' is not a tokenizer the tokenizers library can load (its JSON does not describe one)",
            name,
        ) from None


def _names_remote_code(value: Any) -> str | None:
    """The first key asking for the model's own code, searched at any depth."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found = next((str(key) for key in item if key in _REMOTE_CODE_KEYS), None)
            if found is not None:
                return found
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _check_weights(path: Path, name: str) -> None:
    """A renamed pickle or a truncated file is refused before any conversion; a safetensors header is checked in
    full (every tensor's dtype, shape and offsets inside the file), where a loader would fail at serve time."""
    if name.lower().endswith(".gguf"):
        with path.open("rb") as handle:
            if handle.read(4) != _GGUF_MAGIC:
                raise refused(f"'{name}' is not a GGUF file (bad magic bytes)", name)
    elif name.lower().endswith(".safetensors"):
        try:
            check_safetensors(path, name)
        except ModelFileError as exc:
            raise refused(str(exc), name) from None


def check_file(path: Path, name: str) -> None:
    """Refuse a kept file whose content would make a loader run code."""
    if name.lower().endswith(".json"):
        key = _names_remote_code(read_json(path, name))
        if key is not None:
            raise refused(
                f"'{name}' sets '{key}': the model needs its own Python code to load, which is never run here; "
                "import a model that standard architectures load",
                name,
            )
    elif name.lower().endswith((".safetensors", ".gguf")):
        _check_weights(path, name)


def scan_directory(root: Path, *, package_code: bool = False) -> ModelFiles:
    """Every file under ``root`` classified; raises InvalidInput naming the first refused file.

    ``package_code=True`` (a model shipped inside a Python package) skips the package's own modules
    (``*.py``, ``__pycache__``) instead of refusing them: they are the wrapper's code, never imported, and no
    model file may name them (``auto_map`` is refused). Pickles are refused there too.

    Hidden files and folders ('.git', '.cache', '.gitattributes') are skipped. A symbolic link to a regular
    file is read through: a server-local directory is chosen by the platform admin, and a Hugging Face cache
    snapshot is made of such links (archives, the tenants' path, refuse links before anything is written).
    """
    found = ModelFiles(root=root)
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for filename in sorted(names):
            path = Path(folder) / filename
            name = path.relative_to(root).as_posix()
            verdict = classify(name)
            if package_code and name.lower().endswith((".py", ".pyc")):
                verdict = "skip"
            if verdict == "refuse":
                raise refused(_why_refused(name), name)
            if filename.startswith(".") or verdict == "skip" or not path.is_file():
                found.skipped.append(name)
                continue
            check_file(path, name)
            found.files[name] = path
    return found
