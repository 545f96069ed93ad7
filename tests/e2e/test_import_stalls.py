"""A tenant's import of a model with a large tokenizer must not stall the server (issue 8, finding 6).

The security review measured /healthz slower than 2 s while a 63 MB ``tokenizer.json`` was imported: the
import's checks parsed it (``json.loads``) and loaded it (``Tokenizer.from_file``) in the server's process,
each holding the interpreter for seconds. Here a real word-level tokenizer of about 60 MB, with an ONNX
embedding graph that covers its vocabulary, is imported while a thread polls /healthz.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.harness import HealthWatch, LiveServer, new_tenant
from tests.hostile_models import tokenizer_json

EXTRA_WORDS = 2_600_000  # about 60 MB of tokenizer.json: seconds of parsing and loading
# The slowest /healthz answer accepted while the import runs: the review's threshold (the stall was 7 s). The
# import's child parses 60 MB on the same cores meanwhile, which a loaded 2-core CI machine feels.
HEALTHY_S = 2.0


def _large_tokenizer() -> tuple[bytes, int]:
    """(tokenizer.json, vocabulary size): the test suite's word-level tokenizer with millions of words added."""
    tokenizer = json.loads(tokenizer_json())
    vocab = tokenizer["model"]["vocab"]
    for i in range(EXTRA_WORDS):
        vocab[f"zq{i:07d}xw"] = len(vocab)
    return json.dumps(tokenizer).encode(), len(vocab)


def _embedding_graph(vocab: int) -> bytes:
    """Token embeddings of width 1 for every token id the tokenizer gives (the import probes the highest)."""
    table = numpy_helper.from_array(np.ones((vocab, 1), dtype=np.float32), "table")
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
        for name in ("input_ids", "attention_mask")
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", 1])
    node = helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])
    graph = helper.make_graph([node], "embeddings", inputs, [output], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("maas-import-stalls")).start()
    try:
        yield server
    finally:
        server.stop()


def test_importing_a_large_tokenizer_does_not_stall_the_server(live: LiveServer) -> None:
    tokenizer, vocab = _large_tokenizer()
    assert len(tokenizer) > 55 << 20
    archive = _tar_gz(
        {
            "tokenizer.json": tokenizer,
            "model.onnx": _embedding_graph(vocab),
            "sentence_bert_config.json": b'{"max_seq_length": 64}',
        }
    )
    key = str(new_tenant(live, "big-tokenizer")["key"])
    with HealthWatch(live) as health:
        response = httpx.post(
            f"{live.url}/api/v1/models/import",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("big.tar.gz", archive, "application/octet-stream")},
            data={"name": "big-tokenizer"},
            timeout=300,
        )
    assert response.status_code == 201, response.text
    assert response.json()["files"]["tokenizer.json"] == len(tokenizer)
    assert health.worst < HEALTHY_S, f"/healthz took {health.worst:.2f} s while the tokenizer was imported"
