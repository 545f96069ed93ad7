"""A safetensors file checked in full from its header, before any library maps it: what the format promises.

A safetensors file is 8 bytes of header length (little-endian), a JSON header, then one byte buffer. The
header names every tensor with its dtype, shape and ``[begin, end)`` offsets into the buffer. A file whose
offsets pass the end of the buffer, overlap, or disagree with dtype x shape is refused here, naming the
tensor, where the loader would fail later (at serve time, on every call) with a message of its own.

The rules are the format's own (``safetensors``' ``Metadata::validate``): the tensors tile the buffer from 0
to its end in offset order, without gaps or overlaps, each exactly as long as its dtype and shape say.
Nothing here imports torch: the API process runs it on every imported file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The format's own limit (safetensors' MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"
# Bits per element of every dtype a safetensors file may name and torch loads (sub-byte F4/F6 it does not).
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}
_MAX_REPORTED_NAME = 120


class ModelFileError(ValueError):
    """A model file breaks a rule; ``file`` is its name inside the model, ``str()`` says what is wrong."""

    def __init__(self, message: str, *, file: str) -> None:
        super().__init__(message)
        self.file = file


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _shown(name: str) -> str:
    return name if len(name) <= _MAX_REPORTED_NAME else name[:_MAX_REPORTED_NAME] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"the key '{_shown(repeated)}' appears twice")
    return dict(pairs)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor(name: str, info: Any, file: str) -> TensorInfo:
    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"'{file}' is not a valid safetensors file: tensor '{_shown(name)}' {what}", file=file)

    if not isinstance(info, dict):
        raise bad("is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"has dtype {json.dumps(dtype)[:40]}, not one of {', '.join(DTYPE_BITS)}")
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise bad("has a shape that is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(offset) for offset in offsets)):
        raise bad("has data_offsets that are not two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise bad(f"ends (byte {end}) before it begins (byte {begin})")
    elements = 1
    for dim in shape:
        elements *= dim
    bits = elements * DTYPE_BITS[dtype]
    if bits != (end - begin) * 8:
        raise bad(f"is {end - begin} bytes long, but {dtype} x {shape} needs {bits // 8}")
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def check_safetensors(path: Path, file: str) -> dict[str, TensorInfo]:
    """Every tensor of the file at ``path`` (named ``file`` in the model), or ModelFileError saying what is wrong."""

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"'{file}' is not a valid safetensors file: {what}", file=file)

    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad("it is shorter than the 8 bytes of its header length")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or length + 8 > size:
            raise bad(f"its header length ({length} bytes) does not fit in the file of {size} bytes")
        raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise bad("its header is not a JSON object")
    try:
        header = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, RecursionError):
        raise bad("its header is not JSON") from None
    except ValueError as exc:  # JSONDecodeError, or a key given twice
        reason = str(exc) if "appears twice" in str(exc) else "it is not JSON"
        raise bad(f"its header is not valid ({reason})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise bad(f"its {METADATA_KEY} is not an object of strings")
    tensors = {name: _tensor(name, info, file) for name, info in header.items()}
    buffer = size - 8 - length
    position = 0
    for name, tensor in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if tensor.begin != position:
            what = "overlap" if tensor.begin < position else "leave a gap"
            raise bad(
                f"tensor '{_shown(name)}' starts at byte {tensor.begin} where the data before it ends at byte "
                f"{position}: the tensors {what}"
            )
        position = tensor.end
    if position != buffer:
        verb = "pass the end of" if position > buffer else "do not fill"
        raise bad(f"its tensors' data_offsets {verb} the file (bytes 0-{position} of a {buffer}-byte buffer)")
    return tensors
