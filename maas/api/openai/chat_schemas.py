"""Wire shapes of /v1/chat/completions and /v1/completions, copied from OpenAI's API.

Requests accept and ignore the other fields the official SDK may send (``user``, ``metadata``, ``store``,
``service_tier``, ...); fields that would change the answer and that we do not implement (``tools``,
``logprobs``, ``logit_bias``, ``response_format`` other than text) are refused with a 400 naming them
rather than silently ignored. Bounds a client could abuse (``n``, ``max_tokens``) are schema bounds: a 422
before anything is tokenized or allocated.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maas.api.openai.schemas import valid_unicode
from maas.serving.generation.params import MAX_CHOICES, MAX_STOP_STRINGS

# Far above any context we serve; a larger number is a client bug answered before tokenizing anything.
MAX_TOKENS_BOUND = 1_000_000
MAX_STOP_LENGTH = 256


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, examples=["smollm2-135m-instruct"])
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_BOUND,
        description="Most tokens to generate; prompt + max_tokens must fit the model's context (else 400). "
        "Default: the room left, at most 512",
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="0 is greedy; default 1")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES, description=f"Choices to generate (1..{MAX_CHOICES})")
    seed: int | None = Field(default=None, description="Same seed, same request: same sampled text")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = Field(
        default=None, description=f"Up to {MAX_STOP_STRINGS} strings; the text ends before the first one"
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    # Changing the answer in ways we do not implement: refused when set to something other than the default.
    logprobs: bool | int | None = None
    logit_bias: dict[str, float] | None = None


class ChatCompletionRequest(_Sampling):
    # Checked by hand (``chat._messages``) so a malformed message is a 400 naming e.g. ``messages[1].role``.
    messages: list[Any] = Field(max_length=4096, description="The conversation: objects with a 'role' and a 'content'")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_BOUND, description="= max_tokens")
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    top_logprobs: int | None = None

    _unicode = field_validator("messages")(valid_unicode)


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]] = Field(
        description="A text or a token-id list (one prompt per request here)"
    )
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None

    _unicode = field_validator("prompt")(valid_unicode)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    tool_calls: None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(examples=["chatcmpl-9f2c..."])
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str = Field(examples=["cmpl-9f2c..."])
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: None = None
