"""Wire shapes of /v1/models and /v1/embeddings, copied from OpenAI's API (what the official SDK sends and reads)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own bound on inputs per request


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
