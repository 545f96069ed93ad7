"""Import pretrained models: the admin publishes to the platform catalog, a tenant uploads a private one.

Both run the same importer (safe formats only, one-time conversion in a child process) and answer when the
model is registered, so the call can take a minute for a large model; an import of files already imported
under that name answers at once with the existing version (``already_present``).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile, status
from pydantic import BaseModel, Field, model_validator

from maas.api.auth import Admin, Developer, State
from maas.api.problems import PROBLEM_RESPONSES
from maas.errors import InvalidInput, PayloadTooLarge
from maas.registry import importer

router = APIRouter(tags=["pretrained"], responses=PROBLEM_RESPONSES)


class PlatformImport(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["all-minilm-l6-v2"])
    path: str | None = Field(default=None, description="A directory on the server holding the model's files")
    package: str | None = Field(
        default=None, description="An installed Python package shipping the weights (found, never imported)"
    )
    gguf_file: str | None = Field(default=None, description="Which GGUF file, when the folder holds several")

    @model_validator(mode="after")
    def _one_source(self) -> PlatformImport:
        if (self.path is None) == (self.package is None):
            raise ValueError("give exactly one of 'path' (a server directory) or 'package' (an installed package)")
        return self


class ImportedModel(BaseModel):
    model_name: str
    version: int
    model_version_id: str
    family: str = Field(examples=["embedding", "causal-lm"])
    task: str
    platform: bool
    source_digest: str
    already_present: bool = Field(description="The same files were imported under this name before; nothing new")
    files: dict[str, int] = Field(description="Stored files and their sizes in bytes")
    skipped: list[str] = Field(description="Files left out: neither weights nor configs (README, licences, ...)")
    signature: dict[str, Any]
    metrics: dict[str, Any]


@router.post("/api/v1/platform/models/import", status_code=status.HTTP_201_CREATED, response_model=ImportedModel)
def publish_platform_model(body: PlatformImport, state: State, _: Admin) -> ImportedModel:
    """Publish a model to every tenant (read-only for them; usage metered per tenant). Admin key only."""
    if body.package is not None:
        result = importer.import_package(
            state.factory, state.store, body.package, model_name=body.name, tenant_id=None, gguf_file=body.gguf_file
        )
    else:
        assert body.path is not None
        root = Path(body.path).expanduser()
        result = importer.import_directory(
            state.factory,
            state.store,
            root,
            model_name=body.name,
            tenant_id=None,
            source={"path": str(root)},
            gguf_file=body.gguf_file,
        )
    return ImportedModel(**asdict(result))


@router.post("/api/v1/models/import", status_code=status.HTTP_201_CREATED, response_model=ImportedModel)
def import_private_model(
    state: State,
    caller: Developer,
    file: Annotated[
        UploadFile,
        File(
            description="A zip or tar(.gz) of the model folder: safetensors/GGUF/ONNX weights, config.json, "
            "tokenizer.json (+ tokenizer_config.json, sentence-transformers metadata). Pickles, *.py and "
            "configs with auto_map/trust_remote_code are refused"
        ),
    ],
    name: Annotated[str, Form(description="Model name in your registry (and the `model` of /v1 calls)")],
    gguf_file: Annotated[str | None, Form(description="Which GGUF file, when there are several")] = None,
) -> ImportedModel:
    """Import a model of your own from an archive; it is private to your tenant."""
    assert caller.tenant_id is not None
    importer.check_model_name(name)
    limit = state.settings.max_upload_bytes
    # The upload is already spooled to a temporary file by the form parser: it is measured and read from
    # there, never held in memory whole.
    size = file.file.seek(0, os.SEEK_END)
    if size > limit:
        raise PayloadTooLarge(f"the file is over the upload limit of {limit} bytes (MAAS_MAX_UPLOAD_BYTES)")
    if size == 0:
        raise InvalidInput("the uploaded file is empty", errors=[{"loc": ["body", "file"], "msg": "empty file"}])
    file.file.seek(0)
    settings = state.settings
    result = importer.import_archive(
        state.factory,
        state.store,
        file.file,
        filename=file.filename or "upload",
        model_name=name,
        tenant_id=caller.tenant_id,
        limits=importer.ImportLimits(
            max_members=settings.max_archive_members, max_unpacked_bytes=settings.max_unpacked_bytes
        ),
        gguf_file=gguf_file,
    )
    return ImportedModel(**asdict(result))
