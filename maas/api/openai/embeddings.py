"""POST /v1/embeddings, as the official SDK calls it (``encoding_format: "base64"`` by default).

Policies (documented for users in the request schema too):

- too long: an input over the model's window (``max_tokens``, counted with the model's own tokenizer
  including its special tokens) is refused with 400 ``context_length_exceeded``, never truncated;
- ``dimensions``: accepted only when equal to the model's (all-MiniLM-L6-v2 was not trained to be cut
  short, so a truncated vector would be a worse embedding presented as a valid one);
- empty: an empty string, list or token list is a 400 naming the input;
- usage: ``prompt_tokens`` = ``total_tokens`` = the tokens the model processed; metered per tenant as
  ``embedding_tokens`` (platform models too).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from maas.api.auth import State, TenantCaller
from maas.api.openai.errors import OpenAIError
from maas.api.openai.models import Runtime, resolve
from maas.api.openai.schemas import EmbeddingRequest, EmbeddingResponse
from maas.serving.embeddings import TOKENIZE_INLINE_MAX, EmbeddingModel, Matrix, Rows

router = APIRouter(prefix="/v1/embeddings", tags=["openai"])

METER = "embedding_tokens"


def _rows(model: EmbeddingModel, request_input: Any) -> Rows:
    """Token rows (special tokens included) for every input; refuses empty ones by index."""
    items: list[Any] = [request_input] if isinstance(request_input, str) else list(request_input)
    if len(request_input) == 0:
        raise OpenAIError("'input' must not be empty: send a text or a list of texts", param="input")
    if items and isinstance(items[0], int):  # one token list: list[int]
        items = [items]
    for index, item in enumerate(items):
        if len(item) == 0:
            kind = "text" if isinstance(item, str) else "token list"
            raise OpenAIError(f"input[{index}] is an empty {kind}; every input must be non-empty", param="input")
    if isinstance(items[0], str):
        return model.tokenize(items)
    for index, ids in enumerate(items):
        model.check_ids(ids, index)
    return [model.frame(ids) for ids in items]


def _check_lengths(model: EmbeddingModel, rows: Rows, model_name: str) -> None:
    # ``model_name`` is the caller's: ``model.name`` is whichever tenant loaded these files first.
    for index, row in enumerate(rows):
        if len(row) > model.max_tokens:
            raise OpenAIError(
                f"input[{index}] is {len(row)} tokens; model '{model_name}' takes at most {model.max_tokens} "
                "(counting its special tokens): shorten or split the text",
                param="input",
                code="context_length_exceeded",
            )


def _body(vectors: Matrix, encoding: str, model_name: str, tokens: int) -> bytes:
    if encoding == "base64":
        little = vectors.astype("<f4", copy=False)
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
            for i, row in enumerate(little)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]
    body = {
        "object": "list",
        "data": data,
        "model": model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


@router.post("", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, state: State, caller: TenantCaller, runtime: Runtime) -> Response:
    """Embed one or many inputs with an embedding model (yours or the platform's)."""
    assert caller.tenant_id is not None
    resolved = await resolve(state, runtime, caller.tenant_id, body.model)
    if resolved.family != "embedding":
        raise OpenAIError(
            f"model '{body.model}' is a {resolved.family} model; /v1/embeddings needs an embedding model",
            param="model",
            code="model_not_supported",
        )
    loaded = await runtime.embeddings.get(resolved)
    model = loaded.model
    if body.dimensions is not None and body.dimensions != model.dimensions:
        raise OpenAIError(
            f"model '{body.model}' returns {model.dimensions} dimensions; 'dimensions' must be {model.dimensions} "
            "or left out (embeddings are not truncated)",
            param="dimensions",
        )
    count = 1 if isinstance(body.input, str) else len(body.input)
    if count > TOKENIZE_INLINE_MAX or not model.tokenizes_inline:
        rows = await run_in_threadpool(_rows, model, body.input)
    else:
        rows = _rows(model, body.input)
    _check_lengths(model, rows, body.model)
    # In the tenant's fair share: a large request of another tenant on the same model cannot hold it back.
    vectors = await loaded.embed(rows, tenant=caller.tenant_id)
    tokens = sum(len(row) for row in rows)
    state.usage.add(caller.tenant_id, METER, tokens, resolved.model_name)
    content = _body(np.asarray(vectors), body.encoding_format, resolved.model_name, tokens)
    return Response(content, media_type="application/json")
