"""Wire shapes of ``/v1/files`` and ``/v1/fine_tuning/jobs``, copied from the OpenAI API (openai-python
``types/file_object.py`` and ``types/fine_tuning/*``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str = "fine-tune"
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    """OpenAI's three knobs, plus (a MaaS extension) any ``causal-lm`` hyperparameter such as ``method``,
    ``lora_r``, ``block_size`` or ``max_steps``, passed through to the training job."""

    model_config = ConfigDict(extra="allow")

    n_epochs: int | Auto = Field(default="auto", description="Epochs; auto: 3.")
    batch_size: int | Auto = Field(default="auto", description="Sequences per step; auto: 8.")
    learning_rate_multiplier: float | Auto = Field(
        default="auto", description="Times the default rate of the method (3e-3 LoRA, 5e-5 full); auto: 1."
    )


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # integrations and other hosted-only fields are accepted, unused

    model: str = Field(min_length=1, max_length=200, description="The base model: yours or a platform model.")
    training_file: str = Field(min_length=1, max_length=200)
    validation_file: str | None = Field(default=None, max_length=200)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    hyperparameters: dict[str, Any]
    training_file: str
    validation_file: str | None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
