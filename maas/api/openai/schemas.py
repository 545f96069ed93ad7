"""Wire shapes of /v1/models and /v1/embeddings, copied from OpenAI's API (what the official SDK sends and reads)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own bound on inputs per request


def valid_unicode(value: Any) -> Any:
    """``value`` unchanged, or a ValueError when a text in it holds a lone UTF-16 surrogate.

    JSON may spell one (``"\\ud800"``) and Python decodes it, but it is no character: the tokenizers refuse
    such a string with a TypeError, which was a 500 instead of an answer saying what to fix."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"the text holds a lone UTF-16 surrogate at character {exc.start}, which is not valid Unicode"
                ) from None
    elif isinstance(value, list):
        for item in value:
            valid_unicode(item)
    elif isinstance(value, dict):
        for item in value.values():
            valid_unicode(item)
    return value


class ModelObject(BaseModel):
    id: str = Field(examples=["all-minilm-l6-v2"])
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds when the model was registered")
    owned_by: str = Field(description="'platform' for the shared catalog, else your tenant's name")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, examples=["all-minilm-l6-v2"])
    input: EmbeddingInput = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists "
        f"(at most {MAX_EMBEDDING_INPUTS} inputs). Token ids are the model's own tokenizer's ids, without its "
        "special tokens (added for you, as for a text)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'base64': little-endian float32 bytes, base64-encoded (the SDK's default)"
    )
    dimensions: int | None = Field(
        default=None, ge=1, le=65536, description="Must equal the model's dimensions when given (no truncation)"
    )
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Checked before the union is tried, so a 100,000-item list is refused in one step with one message.
        if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(value)}: split the batch")
        return value

    _unicode = field_validator("input")(valid_unicode)


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage
