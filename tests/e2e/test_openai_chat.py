"""/v1/chat/completions and /v1/completions driven by the official openai SDK against a real server.

The server publishes the shipped SmolLM2-135M-Instruct to the platform catalog on start (``maas up``), so a
brand-new tenant calls it at once. Greedy replies are deterministic, so the golden texts below are
SmolLM2's own (see shared research §2.3).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.harness import LiveServer, new_tenant

MODEL = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("maas-chat"), env={"MAAS_SHIPPED_MODELS": MODEL}).start()
    try:
        server.wait_for_output(f"platform model ready: {MODEL}", timeout=300)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tenant_key(live: LiveServer) -> str:
    return str(new_tenant(live, "chatter")["key"])


@pytest.fixture(scope="module")
def client(live: LiveServer, tenant_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=tenant_key, max_retries=0, timeout=120) as sdk:
        yield sdk


def test_chat_answers_with_the_models_greedy_reply(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=30)

    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "The capital of France is Paris."
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 10  # the template's system prompt and role markers count
    assert reply.usage.completion_tokens == 8  # seven tokens of text and the end-of-turn token
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_deltas_add_up_to_the_same_reply_and_usage(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=24)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 5  # streamed a piece at a time, not in one block
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]


def test_completion_continues_a_prompt_and_stops_at_max_tokens(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=12)

    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    (choice,) = reply.choices
    assert choice.text.startswith(", the city of Nova Haven was a thriving metropolis")
    assert choice.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens == 4


def test_streamed_completion_and_stop_strings(client: openai.OpenAI) -> None:
    stopped = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0, stop=[" Nova"])
    assert stopped.choices[0].text == ", the city of"
    assert stopped.choices[0].finish_reason == "stop"

    pieces = list(
        client.completions.create(
            model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=30, stop="streets", stream=True
        )
    )
    text = "".join(piece.choices[0].text for piece in pieces if piece.choices)
    assert text == ", the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling "
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_n_choices_with_a_seed_are_reproducible(client: openai.OpenAI) -> None:
    def ask() -> list[str]:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name a colour."}],
            n=2,
            seed=7,
            temperature=1.0,
            top_p=0.9,
            max_tokens=12,
        )
        assert [choice.index for choice in reply.choices] == [0, 1]
        assert reply.usage is not None and reply.usage.completion_tokens <= 24
        return [choice.message.content or "" for choice in reply.choices]

    first = ask()
    assert first == ask()
    assert all(first)


def _error(call: object) -> openai.APIStatusError:
    assert isinstance(call, openai.APIStatusError)
    return call


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
        ([{"content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": "hi"}, {"role": "user"}], "messages[1].content"),
        (["hello"], "messages[0]"),
    ],
)
def test_malformed_messages_are_400s_naming_the_field(client: openai.OpenAI, messages: list, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert raised.value.param == param
    assert raised.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_unknown_model_and_out_of_bounds_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=FRANCE)
    assert missing.value.code == "model_not_found"

    # Bounds are schema checks: answered before the prompt is even tokenized.
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        client.chat.completions.create(model=MODEL, messages=FRANCE, n=1000)
    assert too_many.value.param == "n"
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=10**9)

    with pytest.raises(openai.BadRequestError) as beyond:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=9000)
    assert beyond.value.code == "context_length_exceeded"
    assert beyond.value.param == "max_tokens"

    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.completions.create(model=MODEL, prompt="hello " * 9000, max_tokens=5)
    assert long_prompt.value.code == "context_length_exceeded"
    assert long_prompt.value.param == "prompt"

    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert tools.value.param == "tools"


def test_a_prompt_no_context_could_hold_is_refused_without_tokenizing_it(client: openai.OpenAI) -> None:
    # 2.5 MB of conversation took 15 s of one core to tokenize (826,031 tokens) only to be refused; the refusal
    # now comes from its length in characters, before the tokenizer runs.
    conversation = [{"role": "user", "content": "hi " * 400}, {"role": "assistant", "content": "ok"}] * 1000
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=MODEL, messages=[*conversation, {"role": "user", "content": "x"}])
    assert chat.value.code == "context_length_exceeded" and chat.value.param == "messages"
    assert "characters" in chat.value.message
    with pytest.raises(openai.BadRequestError) as completion:
        client.completions.create(model=MODEL, prompt="hello " * 400_000, max_tokens=5)
    assert completion.value.code == "context_length_exceeded" and completion.value.param == "prompt"
    assert "characters" in completion.value.message


def _active_sequences(live: LiveServer) -> float:
    text = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {live.admin_key}"}).text
    match = re.search(r'maas_generation_active_sequences\{[^}]*model="' + MODEL + r'"[^}]*\} (\S+)', text)
    assert match, text[-2000:]
    return float(match.group(1))


def _wait_until_idle(live: LiveServer) -> None:
    deadline = time.monotonic() + 15
    while _active_sequences(live) != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _active_sequences(live) == 0


def test_a_client_that_hangs_up_frees_its_slot(live: LiveServer, tenant_key: str, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {tenant_key}"}
    with httpx.stream("POST", f"{live.url}/v1/completions", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        assert _active_sequences(live) == 1
    # The connection is closed mid-stream: the engine drops the sequence at its next step.
    _wait_until_idle(live)

    # The same for a client that gives up waiting on a non-streamed reply (an SDK timeout).
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/v1/completions", json={**body, "stream": False}, headers=headers, timeout=2)
    _wait_until_idle(live)

    reply = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=3)
    assert reply.choices[0].text == ", the city"


def test_usage_is_metered_to_the_tenant(live: LiveServer, tenant_key: str) -> None:
    deadline = time.monotonic() + 15  # usage is flushed to the database every few seconds
    totals: dict[str, float] = {}
    while time.monotonic() < deadline:
        totals = live.client(tenant_key).usage()["totals"]
        if totals.get("completion_tokens"):
            break
        time.sleep(0.5)
    assert totals.get("prompt_tokens", 0) > 0
    assert totals.get("completion_tokens", 0) >= 12 + 8
