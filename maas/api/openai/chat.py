"""POST /v1/chat/completions: the conversation rendered by the model's own chat template, then generated.

Messages are checked by hand so each mistake is a 400 naming its field (``messages[2].role``), as OpenAI
answers. Roles: system, developer (rendered as system), user, assistant, tool; content is a string or a
list of text parts.

A tenant's own chat template renders in a worker process within ``MAAS_CHAT_TEMPLATE_BUDGET_SECONDS``: past
it the render is stopped and the answer is a 400 ``chat_template_timeout`` (param ``messages``); a client that
leaves meanwhile stops it too. The platform's templates render in this process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response

from maas.api.auth import State, TenantCaller
from maas.api.openai.chat_schemas import ChatCompletion, ChatCompletionRequest
from maas.api.openai.completions import (
    CLIENT_CLOSED_REQUEST,
    Generation,
    RunningGeneration,
    bounded,
    causal_lm,
    off_loop_if_long,
    refuse_unsupported,
    sampling_params,
    sse,
    start,
    stop_strings,
    unless_disconnected,
)
from maas.api.openai.errors import OpenAIError
from maas.api.openai.models import Runtime
from maas.serving.generation.service import NoChatTemplate, PromptTooLong
from maas.serving.generation.template_worker import ChatTemplateFailed, ChatTemplateTimedOut

router = APIRouter(prefix="/v1/chat/completions", tags=["openai"])

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _content(index: int, content: Any) -> str:
    param = f"messages[{index}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(
                    f"{param}[{part_index}] must be a text part {{'type': 'text', 'text': '...'}} (this model reads "
                    "text only)",
                    param=f"{param}[{part_index}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIError(f"{param} must be a string or a list of text parts", param=param)


def messages_of(raw: list[Any]) -> list[dict[str, str]]:
    """The conversation as the chat template expects it; a 400 naming the first malformed field."""
    if not raw:
        raise OpenAIError("'messages' must not be empty: send at least one message", param="messages")
    messages = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise OpenAIError(
                f"messages[{index}] must be an object with 'role' and 'content'", param=f"messages[{index}]"
            )
        role = message.get("role")
        if role is None:
            raise OpenAIError(f"messages[{index}] has no 'role'", param=f"messages[{index}].role")
        if role not in _ROLES:
            raise OpenAIError(
                f"messages[{index}].role is {role!r}; one of {', '.join(_ROLES)} is expected",
                param=f"messages[{index}].role",
            )
        if message.get("content") is None:
            raise OpenAIError(f"messages[{index}] has no 'content'", param=f"messages[{index}].content")
        messages.append({"role": _ROLES[role], "content": _content(index, message["content"])})
    return messages


def chat_chunks(generation: RunningGeneration, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    head = {
        "id": generation.id,
        "object": "chat.completion.chunk",
        "created": generation.created,
        "model": generation.model_name,
        "system_fingerprint": None,
    }

    def chunk(choice: int, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        return {**head, "choices": [{"index": choice, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        for choice in range(generation.stream.params.n):
            yield chunk(choice, {"role": "assistant", "content": ""}, None)
        async for choice, text, finish in generation.deltas():
            if text:
                yield chunk(choice, {"content": text}, None)
            if finish is not None:
                yield chunk(choice, {}, finish)
        if include_usage:
            yield {**head, "choices": [], "usage": generation.usage()}

    return chunks()


@router.post("", response_model=ChatCompletion)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    state: State,
    caller: TenantCaller,
    runtime: Runtime,
    service: Generation,
) -> Any:
    """Reply to a conversation with a causal-lm model that has a chat template (yours or the platform's)."""
    assert caller.tenant_id is not None
    extra: dict[str, Any] = {"tools": body.tools, "top_logprobs": body.top_logprobs}
    if body.response_format and body.response_format.get("type", "text") != "text":
        extra["response_format"] = body.response_format
    refuse_unsupported(body, {name: value for name, value in extra.items() if value})
    messages = messages_of(body.messages)
    stop_strings(body.stop)
    resolved, model = await causal_lm(state, runtime, service, caller.tenant_id, body.model)
    try:
        if resolved.platform:
            size = sum(len(message["content"]) for message in messages)
            prompt = await off_loop_if_long(size, model.chat_prompt, messages, body.model)
        else:
            # A tenant's own template is a program (nested loops can run for minutes): it renders in a worker
            # process that is killed past the budget, or as soon as the client leaves.
            rendering = service.render_chat(model, messages, model_name=body.model, tenant=caller.tenant_id)
            text = await unless_disconnected(request, rendering)
            if text is None:
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            prompt = await off_loop_if_long(len(text), partial(model.encode_rendered, model_name=body.model), text)
    except NoChatTemplate as exc:
        raise OpenAIError(str(exc), param="model", code="model_not_supported") from exc
    except PromptTooLong as exc:
        raise OpenAIError(str(exc), param=exc.param, code="context_length_exceeded") from exc
    except ChatTemplateFailed as exc:
        raise OpenAIError(str(exc), param="messages", code="invalid_chat_template") from exc
    except ChatTemplateTimedOut as exc:
        raise OpenAIError(
            f"the chat template of model '{body.model}' did not finish rendering this conversation within its "
            f"budget of {exc.budget_s:g} s and was stopped; shorten the conversation or fix the template",
            param="messages",
            code="chat_template_timeout",
        ) from exc
    max_tokens = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    try:
        limit = bounded(model, body.model, len(prompt), max_tokens, "messages")
    except OpenAIError as exc:
        exc.param = param if exc.param == "max_tokens" else exc.param
        raise
    generation = start(state, caller.tenant_id, resolved, model, prompt, sampling_params(body, limit), "chatcmpl-")
    if body.stream:
        return sse(request, chat_chunks(generation, bool(body.stream_options and body.stream_options.include_usage)))
    outcome = await generation.run(request)
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return ChatCompletion.model_validate(
        {
            "id": generation.id,
            "created": generation.created,
            "model": resolved.model_name,
            "choices": [
                {"index": i, "message": {"content": text}, "finish_reason": outcome.finish_reasons[i]}
                for i, text in enumerate(outcome.texts)
            ],
            "usage": generation.usage(),
        }
    )
