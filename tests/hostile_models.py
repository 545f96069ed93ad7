"""Small models and archives built byte by byte for the import-safety tests: honest ones and attacks.

An embedding graph here is a token-embedding table (``Gather`` of ``input_ids``): the runtime pools it, so it
is a real embedding model of a few hundred bytes. The attacks are the ones a security review ran against a
live server (ONNX external data pointing at the server's files, bombs, hostile configs).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers

WORDS = ["[UNK]", "[PAD]", "hello", "world", "a", "man", "is", "eating", "food"]


def tokenizer_json() -> bytes:
    """A word-level tokenizer of WORDS ('[UNK]' for anything else), as tokenizer.json."""
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


def _inputs() -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
    ]


def _model(graph: onnx.GraphProto, **extra: object) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **extra)
    model.ir_version = 8
    return model.SerializeToString()


def embedding_graph(*, vocab: int = len(WORDS), dim: int = 4, positions: int | None = None) -> bytes:
    """Token embeddings (batch, tokens, dim); with ``positions``, a position table of that many rows is added."""
    table = numpy_helper.from_array(np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim) / 10, "table")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["words"])]
    initializers = [table]
    if positions is None:
        nodes.append(helper.make_node("Identity", ["words"], ["last_hidden_state"]))
    else:
        initializers.append(numpy_helper.from_array(np.ones((positions, dim), dtype=np.float32), "positions"))
        initializers += [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("zero", 0), ("one", 1))]
        nodes += [
            helper.make_node("Shape", ["input_ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["length"]),
            helper.make_node("Range", ["zero", "length", "one"], ["steps"]),
            helper.make_node("Gather", ["positions", "steps"], ["where"]),
            helper.make_node("Add", ["words", "where"], ["last_hidden_state"]),
        ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", dim])
    return _model(helper.make_graph(nodes, "embeddings", _inputs(), [output], initializer=initializers))


def external_tensor(name: str, location: str, length: int) -> TensorProto:
    """A uint8 tensor of ``length`` bytes kept in the file ``location`` (ONNX "external data")."""
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[1, length])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def file_reading_graph(location: str, length: int) -> bytes:
    """The attack: a graph whose 'embedding' is the bytes of the file at ``location`` (relative to the server)."""
    nodes = [helper.make_node("Cast", ["secret"], ["embeddings"], to=TensorProto.FLOAT)]
    output = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, length])
    graph = helper.make_graph(
        nodes, "leak", _inputs(), [output], initializer=[external_tensor("secret", location, length)]
    )
    return _model(graph)


def hidden_external_data(where: str, location: str = "secret.bin") -> onnx.ModelProto:
    """A model keeping one tensor's bytes outside it, in one of the places a tensor can hide."""
    tensor = external_tensor("hidden", location, 8)
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])
    constant = helper.make_node("Constant", [], ["out"], value=tensor)
    functions: list[onnx.FunctionProto] = []
    initializers: list[TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    if where == "initializer":
        initializers, nodes = [tensor], [helper.make_node("Cast", ["hidden"], ["out"], to=TensorProto.FLOAT)]
    elif where == "constant":
        nodes = [constant]
    elif where == "subgraph":
        branch = helper.make_graph([constant], "branch", [], [output])
        nodes = [helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)]
        initializers = [numpy_helper.from_array(np.array(True), "cond")]
    elif where == "loop-in-if":
        body = helper.make_graph([constant], "body", [], [output])
        inner_if = helper.make_node("If", ["cond"], ["out"], then_branch=body, else_branch=body)
        inner = helper.make_graph([inner_if], "inner", [], [output])
        nodes = [helper.make_node("If", ["cond"], ["out"], then_branch=inner, else_branch=inner)]
        initializers = [numpy_helper.from_array(np.array(True), "cond")]
    elif where == "sparse":
        indices = numpy_helper.from_array(np.array([0], dtype=np.int64), "indices")
        sparse = [helper.make_sparse_tensor(tensor, indices, [8])]
        nodes = [helper.make_node("Identity", ["hidden"], ["out"])]
    elif where == "function":
        functions = [helper.make_function("local", "leak", [], ["out"], [constant], [helper.make_opsetid("", 17)])]
        nodes = [helper.make_node("leak", [], ["out"], domain="local")]
    else:
        raise ValueError(where)
    graph = helper.make_graph(nodes, "g", _inputs(), [output], initializer=initializers, sparse_initializer=sparse)
    return helper.make_model(graph, functions=functions, opset_imports=[helper.make_opsetid("", 17)])


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_of_zeros(path: Path, member: str, size: int, *, extra: dict[str, bytes] | None = None) -> Path:
    """A tar.gz holding ``size`` zero bytes as ``member``, built streaming (a 2 GiB member is ~2 MB on disk).

    The zeros are one 64 MiB gzip member compressed once and repeated: gzip readers join members.
    """
    block = 64 << 20
    assert size % block == 0
    header = tarfile.TarInfo(member)
    header.size = size
    zeros = gzip.compress(bytes(block), compresslevel=9)
    with path.open("wb") as out:
        out.write(gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(size // block):
            out.write(zeros)
        tail = io.BytesIO()
        with tarfile.open(fileobj=tail, mode="w") as archive:
            for name, data in (extra or {}).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        out.write(gzip.compress(tail.getvalue()))
    return path


def zip_of_zeros(path: Path, member: str, size: int) -> Path:
    """A zip holding ``size`` zero bytes as ``member`` (deflate, honest sizes), built streaming."""
    chunk = bytes(8 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(member, "w", force_zip64=True) as stream,
    ):
        for _ in range(size // len(chunk)):
            stream.write(chunk)
    return path


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def config(**values: object) -> bytes:
    return json.dumps({"architectures": ["BertModel"], "model_type": "bert", **values}).encode()
