"""POST /v1/completions, and the generation plumbing /v1/chat/completions shares with it.

A request is checked (fields, model family, prompt length against the context) before it is queued, so a
refused request costs no KV cache. Streams are SSE ``data: {json}`` chunks ending with ``data: [DONE]``;
a client that disconnects cancels its generation, whose batch slot is freed at the engine's next step.
Usage is metered per tenant as ``prompt_tokens`` and ``completion_tokens`` (counted with the model's own
tokenizer; the EOS token a reply ends with counts, as at OpenAI), also for a stream cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from maas.api.auth import State, TenantCaller
from maas.api.openai.chat_schemas import Completion, CompletionRequest, _Sampling
from maas.api.openai.errors import OpenAIError, envelope
from maas.api.openai.models import Runtime, resolve
from maas.api.state import AppState
from maas.registry.catalog import ResolvedModel
from maas.serving.generation.params import MAX_STOP_STRINGS, SamplingParams
from maas.serving.generation.service import (
    GenerationCollector,
    GenerationService,
    LoadedGenerator,
    PromptTooLong,
)
from maas.serving.generation.stream import GenerationStream

router = APIRouter(prefix="/v1/completions", tags=["openai"])
log = logging.getLogger("maas.api")

CLIENT_CLOSED_REQUEST = 499  # nobody reads it: the status access logs show for a client that hung up
PROMPT_METER = "prompt_tokens"
COMPLETION_METER = "completion_tokens"
TOKENIZE_INLINE_CHARS = 20_000
# A client that gives up on a non-streamed reply (an SDK timeout) is noticed within this time.
_DISCONNECT_POLL_SECONDS = 0.5
# ... and one that leaves while its chat template renders (the render is then stopped) within this one.
_RENDER_DISCONNECT_POLL_SECONDS = 0.1
T = TypeVar("T")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def generation_service(request: Request) -> GenerationService:
    """The process's generation service, created on the first causal-lm request (torch is not loaded yet)."""
    service: GenerationService | None = getattr(request.app.state, "maas_generation", None)
    if service is None:
        state: AppState = request.app.state.maas
        settings = state.settings
        service = GenerationService(
            state.store,
            settings.home / "model-dirs",
            threads=settings.generation_threads,  # MAAS_GENERATION_THREADS; None: torch's default
            template_workers=settings.chat_template_workers,
            template_budget_s=settings.chat_template_budget_seconds,
        )
        state.metrics.registry.register(GenerationCollector(service))
        request.app.state.maas_generation = service
    return service


Generation = Annotated[GenerationService, Depends(generation_service)]


def refuse_unsupported(body: _Sampling, extra: dict[str, Any]) -> None:
    """Fields that would change the answer in ways we do not implement: a 400 naming the field."""
    if body.logprobs:
        extra["logprobs"] = body.logprobs
    if body.logit_bias:
        extra["logit_bias"] = body.logit_bias
    for name in extra:
        raise OpenAIError(f"'{name}' is not supported by this server; leave it out", param=name)


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise OpenAIError(f"'stop' takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", param="stop")
    for index, item in enumerate(stops):
        if not item or len(item) > 256:
            raise OpenAIError(f"stop[{index}] must be 1 to 256 characters", param="stop")
    return tuple(stops)


async def causal_lm(
    state: AppState, runtime: Runtime, service: GenerationService, tenant: str, name: str
) -> tuple[ResolvedModel, LoadedGenerator]:
    resolved = await resolve(state, runtime, tenant, name)
    if resolved.family != "causal-lm":
        raise OpenAIError(
            f"model '{name}' is a {resolved.family} model; text generation needs a causal-lm model",
            param="model",
            code="model_not_supported",
        )
    return resolved, await service.get(resolved)


def sampling_params(body: _Sampling, max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=stop_strings(body.stop),
        n=body.n or 1,
    )


def bounded(
    model: LoadedGenerator, model_name: str, prompt_tokens: int, max_tokens: int | None, prompt_param: str
) -> int:
    try:
        return model.bounded_max_tokens(prompt_tokens, max_tokens, prompt_param=prompt_param, model_name=model_name)
    except PromptTooLong as exc:
        raise OpenAIError(str(exc), param=exc.param, code="context_length_exceeded") from exc


@dataclass
class Outcome:
    texts: list[str]
    finish_reasons: list[str]
    completion_tokens: list[int]

    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens)


@dataclass
class RunningGeneration:
    """One request's generation: its stream, ids, and the metering done once it ends, however it ends."""

    state: AppState
    tenant_id: str
    model_name: str
    stream: GenerationStream
    prompt_tokens: int
    id: str
    created: int = field(default_factory=lambda: int(time.time()))
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        n = self.stream.params.n
        self.outcome = Outcome([""] * n, [""] * n, [0] * n)

    async def deltas(self) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, text, finish_reason) in order; meters usage when the stream ends or is abandoned."""
        try:
            async for delta in self.stream.deltas():
                self.outcome.texts[delta.choice] += delta.text
                self.outcome.completion_tokens[delta.choice] = delta.completion_tokens
                if delta.finish_reason is not None:
                    self.outcome.finish_reasons[delta.choice] = delta.finish_reason
                yield delta.choice, delta.text, delta.finish_reason
        finally:
            self.state.usage.add(self.tenant_id, PROMPT_METER, self.prompt_tokens, self.model_name)
            self.state.usage.add(
                self.tenant_id, COMPLETION_METER, self.outcome.total_completion_tokens, self.model_name
            )

    async def _drain(self) -> Outcome:
        async for _ in self.deltas():
            pass
        return self.outcome

    async def run(self, request: Request) -> Outcome | None:
        """The whole reply; None when the client hung up first (its generation is then cancelled)."""
        task = asyncio.ensure_future(self._drain())
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()  # leaves the stream's loop: the engine drops the sequences at its next step
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None

    def usage(self) -> dict[str, int]:
        completion = self.outcome.total_completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def start(
    state: AppState,
    tenant_id: str,
    resolved: ResolvedModel,
    model: LoadedGenerator,
    prompt: list[int],
    params: SamplingParams,
    id_prefix: str,
) -> RunningGeneration:
    return RunningGeneration(
        state=state,
        tenant_id=tenant_id,
        model_name=resolved.model_name,
        stream=model.generate(prompt, params),
        prompt_tokens=len(prompt),
        id=f"{id_prefix}{uuid.uuid4().hex}",
    )


async def unless_disconnected(
    request: Request, work: Awaitable[T], poll_seconds: float = _RENDER_DISCONNECT_POLL_SECONDS
) -> T | None:
    """``work``'s result, or None as soon as the client has hung up: ``work`` is then cancelled (a chat
    template's worker is killed), so nothing keeps running for a caller who is gone."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_seconds)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def sse(request: Request, chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except Exception:
            # The engine failed mid-stream. The answer has begun, so no error handler sees this: it is answered
            # here as UnexpectedErrors answers a 500 (a generic text and the request id its one log line
            # carries; the exception's own text may name server files), in an "error" chunk the SDK raises
            # APIError on.
            request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
            log.exception("generation failed mid-stream (request %s)", request_id)
            message = f"generation failed unexpectedly; request id {request_id}"
            yield b"data: " + orjson.dumps(envelope(500, message)) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def off_loop_if_long(size: int, function: Callable[..., list[int]], *args: Any) -> list[int]:
    """Tokenize on the event loop (microseconds for a chat turn), or in a thread for a long text that would
    stall every other request for milliseconds."""
    if size > TOKENIZE_INLINE_CHARS:
        return await run_in_threadpool(function, *args)
    return function(*args)


def _completion_prompt(model: LoadedGenerator, prompt: Any, model_name: str) -> list[int]:
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise OpenAIError("one prompt per request: send each prompt in its own request", param="prompt")
        prompt = prompt[0]
    if len(prompt) == 0:
        raise OpenAIError("'prompt' must not be empty", param="prompt")
    try:
        ids = model.text_prompt(prompt, model_name=model_name)
    except PromptTooLong as exc:
        raise OpenAIError(str(exc), param=exc.param, code="context_length_exceeded") from exc
    vocab = model.vocab_size
    bad = next((i for i in ids if not 0 <= i < vocab), None) if not isinstance(prompt, str) else None
    if bad is not None:
        raise OpenAIError(f"token id {bad} is outside the model's vocabulary (0..{vocab - 1})", param="prompt")
    return ids


def completion_chunks(generation: RunningGeneration, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    head = {
        "id": generation.id,
        "object": "text_completion",
        "created": generation.created,
        "model": generation.model_name,
    }

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        async for choice, text, finish in generation.deltas():
            if text or finish:
                yield {**head, "choices": [{"index": choice, "text": text, "finish_reason": finish, "logprobs": None}]}
        if include_usage:
            yield {**head, "choices": [], "usage": generation.usage()}

    return chunks()


@router.post("", response_model=Completion)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    state: State,
    caller: TenantCaller,
    runtime: Runtime,
    service: Generation,
) -> Any:
    """Continue a text prompt with a causal-lm model (yours or the platform's)."""
    assert caller.tenant_id is not None
    extra: dict[str, Any] = {name: value for name, value in (("suffix", body.suffix), ("echo", body.echo)) if value}
    if body.best_of not in (None, 1):
        extra["best_of"] = body.best_of
    refuse_unsupported(body, extra)
    stop_strings(body.stop)  # checked before the model is loaded
    resolved, model = await causal_lm(state, runtime, service, caller.tenant_id, body.model)
    prompt = await off_loop_if_long(len(str(body.prompt)), _completion_prompt, model, body.prompt, body.model)
    params = sampling_params(body, bounded(model, body.model, len(prompt), body.max_tokens, "prompt"))
    generation = start(state, caller.tenant_id, resolved, model, prompt, params, "cmpl-")
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(request, completion_chunks(generation, include_usage))
    outcome = await generation.run(request)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Completion.model_validate(
        {
            "id": generation.id,
            "created": generation.created,
            "model": resolved.model_name,
            "choices": [
                {"index": i, "text": text, "finish_reason": outcome.finish_reasons[i]}
                for i, text in enumerate(outcome.texts)
            ],
            "usage": generation.usage(),
        }
    )
