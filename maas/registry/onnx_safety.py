"""An ONNX graph may carry its own tensors only: "external data" is refused wherever it hides.

ONNX lets a tensor keep its bytes in another file, named by a relative path (``data_location = EXTERNAL``
with ``location``/``offset``/``length`` entries). ONNX Runtime reads that file when the session is built:
against the model's folder when given a path, against the process's working directory when given bytes,
which is how a tenant's graph once returned the platform admin key as an "embedding". No model we serve
needs it (external data exists for graphs over protobuf's 2 GB limit), so any tensor that names it is
refused, at import and again right before a session is built, for versions imported before this check.

Tensors hide in more places than the graph's initializers: sparse initializers, ``Constant`` nodes and any
other node's tensor attributes, the subgraphs of ``If``/``Loop``/``Scan``, model-local functions and
training info. The walk below visits every message field, so it finds a tensor wherever the format puts one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx

from maas.errors import InvalidInput

_SHOWN = 120  # characters of a tensor or file name echoed back: the tenant's own strings, kept short


def _tensors(message: Any) -> Iterator[onnx.TensorProto]:
    """Every TensorProto inside ``message``, at any depth (iterative: nested graphs cannot exhaust the stack)."""
    pending = [message]
    while pending:
        current = pending.pop()
        if isinstance(current, onnx.TensorProto):
            yield current  # its fields are data, never read here (raw_data would be copied for nothing)
            continue
        for descriptor, value in current.ListFields():
            if descriptor.message_type is None:
                continue
            # onnx.proto has no map fields: a repeated message field is a list of messages.
            pending.extend(value if descriptor.is_repeated else [value])


def _location(tensor: onnx.TensorProto) -> str:
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def external_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, external location) of every tensor that keeps its bytes outside the model."""
    return [
        (tensor.name, _location(tensor))
        for tensor in _tensors(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
    ]


def parse_onnx(data: bytes, file: str) -> onnx.ModelProto:
    """The model in ``data``, parsed without reading any external file; InvalidInput if it is not ONNX."""
    try:
        return onnx.load_model_from_string(data)
    except Exception:  # protobuf's DecodeError, or any other way the bytes are not a model
        raise InvalidInput(
            f"'{file}' is not an ONNX model (its protobuf does not parse)",
            errors=[{"loc": ["body", "files"], "msg": "not an ONNX model", "file": file}],
        ) from None


def refuse_external_data(model: onnx.ModelProto, file: str) -> None:
    """Raise InvalidInput naming ``file`` and the first tensor that keeps its bytes in another file."""
    found = external_tensors(model)
    if not found:
        return
    tensor, location = found[0]
    detail = (
        f"'{file}' keeps tensor '{tensor[:_SHOWN]}' in an external data file ('{location[:_SHOWN]}'); external "
        "data is refused: save the model with every tensor inside the .onnx file"
    )
    raise InvalidInput(detail, errors=[{"loc": ["body", "files"], "msg": detail, "file": file}])


def check_onnx_bytes(data: bytes, file: str) -> None:
    """Refuse ``data`` unless it is an ONNX model whose tensors are all inside it (see the module docstring)."""
    refuse_external_data(parse_onnx(data, file), file)
