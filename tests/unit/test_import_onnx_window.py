"""An embedding model that passed import serves its whole declared window (issue 8, review of the fixes).

The probe ran at most 512 tokens while a model may declare up to 32,768: a BERT of 512 positions whose
sentence_bert_config.json says 4,096 was imported, and a caller's 600-token text then failed inside ONNX
Runtime with a 500. The import children are guarded like the conversion child.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import make_engine, make_session_factory
from maas.db.migrate import upgrade_to_head
from maas.errors import InvalidInput
from maas.registry import import_file_check, import_onnx, importer
from maas.registry.import_onnx import probe_embedding_graph
from maas.serving.embeddings import EmbeddingModel
from maas.storage import ArtifactStore, open_store
from tests.hostile_models import config, embedding_graph, tokenizer_json

REPO = Path(__file__).resolve().parents[2]
POSITIONS = 512
DECLARED = 4096


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], ArtifactStore]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    upgrade_to_head(engine)
    yield make_session_factory(engine), open_store((tmp_path / "artifacts").resolve().as_uri())
    engine.dispose()


def _model_folder(root: Path, *, positions_in_config: bool) -> Path:
    """An ONNX BERT-like encoder of 512 positions whose sentence-transformers config declares 4,096 tokens."""
    root.mkdir()
    files = {
        "model.onnx": embedding_graph(positions=POSITIONS),
        "tokenizer.json": tokenizer_json(),
        "config.json": config(max_position_embeddings=POSITIONS) if positions_in_config else b"{}",
        "sentence_bert_config.json": json.dumps({"max_seq_length": DECLARED}).encode(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_a_window_past_the_graphs_positions_is_refused_at_import(
    registry: tuple[sessionmaker[Session], ArtifactStore], tmp_path: Path
) -> None:
    # No config.json says how many positions the graph has: the probe runs the declared window and fails.
    factory, store = registry
    folder = _model_folder(tmp_path / "model", positions_in_config=False)
    with pytest.raises(InvalidInput) as refused:
        importer.import_directory(factory, store, folder, model_name="m", tenant_id=None, source={})
    detail = refused.value.detail
    assert f"text of {DECLARED} tokens" in detail and "'model.onnx'" in detail
    assert str(tmp_path) not in detail and "onnxruntime" not in detail


def test_a_declared_window_is_bounded_by_the_position_table(
    registry: tuple[sessionmaker[Session], ArtifactStore], tmp_path: Path
) -> None:
    factory, store = registry
    folder = _model_folder(tmp_path / "model", positions_in_config=True)
    result = importer.import_directory(factory, store, folder, model_name="m", tenant_id=None, source={})
    assert result.signature["max_tokens"] == POSITIONS


def test_the_probe_runs_the_whole_declared_window(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_json())
    graph = embedding_graph(positions=POSITIONS)
    signature = probe_embedding_graph(graph, tmp_path / "tokenizer.json", file="model.onnx", max_tokens=POSITIONS)
    assert signature["dimensions"] == 4
    with pytest.raises(InvalidInput, match=f"text of {POSITIONS + 1} tokens"):
        probe_embedding_graph(graph, tmp_path / "tokenizer.json", file="model.onnx", max_tokens=POSITIONS + 1)


def test_a_graph_failing_at_serve_time_is_a_domain_error_not_a_500() -> None:
    """A model imported before the whole window was probed: ONNX Runtime's error becomes the caller's 422."""
    signature = {
        "dimensions": 4,
        "max_tokens": DECLARED,
        "onnx_output": "last_hidden_state",
        "pool_in_runtime": True,
    }
    model = EmbeddingModel("long", embedding_graph(positions=POSITIONS), tokenizer_json(), signature)
    try:
        assert model.embed([[2] * POSITIONS]).shape == (1, 4)
        with pytest.raises(InvalidInput) as refused:
            model.embed([[2] * 600, [3] * 5])
    finally:
        model.tokenizer.close()
    detail = refused.value.detail
    assert "model 'long' fails on inputs of up to 600 tokens" in detail
    for leak in ("onnxruntime", "Gather", "/", "Traceback"):
        assert leak not in detail


@pytest.mark.parametrize("child", [import_onnx, import_file_check])
def test_the_onnx_and_file_check_children_are_guarded(
    child: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the conversion child: they exit with their parent and can never unpickle."""
    calls: list[str] = []
    monkeypatch.setattr(child, "exit_with_parent", lambda: calls.append("exit_with_parent"))
    monkeypatch.setattr(child, "forbid_unpickling", lambda **_: calls.append("forbid_unpickling"))
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_json())
    if child is import_onnx:
        (tmp_path / "model.onnx").write_bytes(embedding_graph())
        import_onnx.main(
            [str(tmp_path / "model.onnx"), str(tmp_path / "tokenizer.json"), "model.onnx", "16", str(tmp_path)]
        )
    else:
        request = [{"name": "tokenizer.json", "path": str(tmp_path / "tokenizer.json"), "tokenizer": True}]
        (tmp_path / "request.json").write_text(json.dumps(request), encoding="utf-8")
        import_file_check.main([str(tmp_path / "request.json"), str(tmp_path)])
    assert calls == ["exit_with_parent", "forbid_unpickling"]
    assert "error" not in json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))


def test_a_child_without_torch_can_neither_unpickle_nor_import_torch() -> None:
    script = (
        "import pickle, sys\n"
        "from maas.registry.child_guard import UnpicklingRefused, forbid_unpickling\n"
        "forbid_unpickling(without_torch=True)\n"
        "try:\n"
        "    pickle.loads(sys.stdin.buffer.read())\n"
        "except UnpicklingRefused:\n"
        "    print('refused')\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('no torch')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], input=pickle.dumps([1]), capture_output=True, cwd=REPO, timeout=60, check=True
    )
    assert ran.stdout.decode().split() == ["refused", "no", "torch"]
