"""Which files a pretrained model may bring, and the checks that refuse anything that could run code.

Safe formats only (DESIGN decision 5): weights in safetensors, GGUF or ONNX; configs and tokenizers in JSON
or plain text. Refused, each with a message naming the file:

- pickles and anything that unpickles (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``, ``*.joblib``,
  ``*.npy``/``*.npz``): loading them runs arbitrary code;
- code (``*.py``, compiled modules, shared libraries);
- any JSON config naming ``auto_map`` or ``trust_remote_code`` (at any depth): they ask the loader to
  download or run the model's own Python classes.

A large file (a tokenizer.json of tens of MB, a safetensors header past a MiB) is checked in a child process
(``import_file_check``), one for all of an import's large files: parsing and loading it holds the interpreter
for seconds, which in the API process would stall every request. The checks there are the ones here, and what
they refuse is refused in the same words.

Other files (README.md, licences, a training-data description) are not code and not needed: they are
skipped and reported, never stored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from maas.errors import InvalidInput
from maas.registry.child_process import ChildLimits, run_child
from maas.registry.safetensors_check import MAX_HEADER_BYTES, ModelFileError, check_safetensors

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
# Configs are read again in the server's process after the scan (family detection, signature, shard map):
# they are kilobytes in real models, so a larger one is refused before anything parses it.
MAX_CONFIG_BYTES = 1024 * 1024
# tokenizer_config.json is read there too (the causal LM's checks); Gemma 3's, with its added_tokens_decoder,
# is about 1.2 MB.
_MAX_TOKENIZER_CONFIG_BYTES = 4 * 1024 * 1024
_CONFIG_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "special_tokens_map.json",
        "model.safetensors.index.json",
    }
)
# Configs and tokenizers nest a handful of levels; far deeper is an attack on every recursive reader after us.
MAX_JSON_DEPTH = 64
_GGUF_MAGIC = b"GGUF"
TOKENIZER = "tokenizer.json"
# Checking a file parses it with the interpreter held throughout: json.loads about 60 ms a MiB, tokenizers
# loading a tokenizer.json about 100 ms. Past this many bytes a file is checked in a child process instead.
OFF_PROCESS_BYTES = 1 << 20
# The child that checks them, named and never imported here: it runs this module's own checks.
_FILE_CHECK = "maas.registry.import_file_check"
# Its time: far more than the slowest parsing measured (a safetensors header, about 7 MB/s); its memory: a
# parsed JSON file takes about ten times its size.
_CHECK_BASE_S = 120.0
_CHECK_S_PER_BYTE = 1e-6
_CHECK_MEMORY_PER_BYTE = 24


def refused(detail: str, name: str | None = None) -> InvalidInput:
    extra: dict[str, Any] = {"file": name} if name is not None else {}
    return InvalidInput(detail, errors=[{"loc": ["body", "files"], "msg": detail, **extra}])


@dataclass
class ModelFiles:
    """The accepted files of a model directory, by relative name ('1_Pooling/config.json'), and what was skipped."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # A large tokenizer.json is loaded by the scan's child process: its refusal (None: it loads) waits here
    # for ``check_tokenizer``, so it is raised where an in-process check would raise it.
    tokenizer_verdicts: dict[str, str | None] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.files

    def check_tokenizer(self, name: str = TOKENIZER) -> None:
        """Refuse the tokenizer file ``name`` unless the tokenizers library loads it (see ``check_tokenizer``)."""
        if name not in self.tokenizer_verdicts:
            check_tokenizer(self.files[name], name)
        elif (error := self.tokenizer_verdicts[name]) is not None:
            raise refused(error, name)

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


def _json_limit(name: str) -> int:
    if name == "tokenizer_config.json":
        return _MAX_TOKENIZER_CONFIG_BYTES
    return MAX_CONFIG_BYTES if name in _CONFIG_NAMES else _MAX_JSON_BYTES


def read_json(path: Path, name: str) -> Any:
    """The JSON in ``path`` (``name`` is how the model's archive calls it: messages never show server paths)."""
    limit = _json_limit(name)
    if path.stat().st_size > limit:
        raise refused(f"'{name}' is larger than {limit // (1024 * 1024)} MB; is it really a config?", name)
    return parse_json(path.read_bytes(), name)


def check_tokenizer(path: Path, name: str = TOKENIZER) -> None:
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


def _parsed_bytes(path: Path, name: str) -> int:
    """How many bytes ``check_file`` parses of the kept file ``name`` (0 for a file it refuses unparsed)."""
    lower = name.lower()
    if lower.endswith(".json"):
        size = path.stat().st_size
        return size if size <= _json_limit(name) else 0
    if lower.endswith(".safetensors"):
        with path.open("rb") as handle:
            head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        return length if length <= min(MAX_HEADER_BYTES, path.stat().st_size - 8) else 0
    return 0


def _check_in_child(heavy: dict[str, tuple[Path, int]]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """What ``check_file`` says of each file in ``heavy`` (name -> (path, bytes parsed)), and ``check_tokenizer``
    of a tokenizer.json among them, from one child process: name -> the refusal's message, None for a pass."""
    parsed = [size for _, size in heavy.values()]
    limits = ChildLimits(
        timeout_s=_CHECK_BASE_S + _CHECK_S_PER_BYTE * sum(parsed),
        memory_bytes=max(2 << 30, _CHECK_MEMORY_PER_BYTE * max(parsed)),
    )
    request = [
        {"name": name, "path": str(path.absolute()), "tokenizer": name == TOKENIZER}
        for name, (path, _) in heavy.items()
    ]
    with tempfile.TemporaryDirectory(prefix="maas-file-check-") as work:
        (Path(work) / "request.json").write_text(json.dumps(request), encoding="utf-8")
        what = "checking " + ", ".join(f"'{name}'" for name in heavy)
        report = run_child(_FILE_CHECK, [str(Path(work) / "request.json")], Path(work), limits=limits, what=what)
    return report["files"], report["tokenizers"]


def _listed(root: Path, package_code: bool) -> list[tuple[str, Path, str]]:
    """(name, path, 'keep' | 'skip' | 'refuse') of every file under ``root``, in the order the scan checks them."""
    listed: list[tuple[str, Path, str]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for filename in sorted(names):
            path = Path(folder) / filename
            name = path.relative_to(root).as_posix()
            verdict = classify(name)
            if package_code and name.lower().endswith((".py", ".pyc")):
                verdict = "skip"
            if verdict == "keep" and (filename.startswith(".") or not path.is_file()):
                verdict = "skip"
            listed.append((name, path, verdict))
    return listed


def scan_directory(root: Path, *, package_code: bool = False) -> ModelFiles:
    """Every file under ``root`` classified; raises InvalidInput naming the first refused file.

    ``package_code=True`` (a model shipped inside a Python package) skips the package's own modules
    (``*.py``, ``__pycache__``) instead of refusing them: they are the wrapper's code, never imported, and no
    model file may name them (``auto_map`` is refused). Pickles are refused there too.

    Hidden files and folders ('.git', '.cache', '.gitattributes') are skipped. A symbolic link to a regular
    file is read through: a server-local directory is chosen by the platform admin, and a Hugging Face cache
    snapshot is made of such links (archives, the tenants' path, refuse links before anything is written).

    Files past OFF_PROCESS_BYTES are checked together in one child process, started when the scan reaches the
    first of them (and a large tokenizer.json is loaded there too, for ``ModelFiles.check_tokenizer``); only
    files before the first refused name can be the first refusal, so only they are sent.
    """
    found = ModelFiles(root=root)
    listed = _listed(root, package_code)
    first_refused = next((i for i, (_, _, verdict) in enumerate(listed) if verdict == "refuse"), len(listed))
    heavy = {
        name: (path, size)
        for name, path, verdict in listed[:first_refused]
        if verdict == "keep" and (size := _parsed_bytes(path, name)) > OFF_PROCESS_BYTES
    }
    verdicts: dict[str, str | None] | None = None
    for name, path, verdict in listed:
        if verdict == "refuse":
            raise refused(_why_refused(name), name)
        if verdict == "skip":
            found.skipped.append(name)
            continue
        if name not in heavy:
            check_file(path, name)
        else:
            if verdicts is None:
                verdicts, found.tokenizer_verdicts = _check_in_child(heavy)
            if (error := verdicts[name]) is not None:
                raise refused(error, name)
        found.files[name] = path
    return found
