"""The ``image-cnn`` family: a convolutional classifier over images converted to one size and channel count.

This module is torch-free (hyperparameters, the submit-time plan, family metadata); the network is in
:mod:`maas.models.image_cnn_net`, the trainer in :mod:`maas.training.image_cnn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, JobPlan, PlanRequest

FAMILY_NAME = "image-cnn"
TARGET = "label"
MIN_SIDE = 4
MAX_SIDE = 256  # larger images cost more memory and time than a CPU-trained CNN should take
DEFAULT_MAX_SIDE = 64  # without an image_size, larger images are shrunk to this (aspect kept)


class ConvBlock(BaseModel):
    """Conv (same padding) → batch norm (optional) → ReLU → pooling (optional, halves the size) → dropout."""

    model_config = ConfigDict(extra="forbid")

    filters: int = Field(default=32, ge=1, le=1024)
    kernel_size: int = Field(default=3, ge=1, le=11, description="Odd: 1, 3, 5, 7, 9 or 11.")
    pooling: Literal["max", "avg", "none"] = "max"
    batch_norm: bool = True
    dropout: float = Field(default=0.1, ge=0.0, le=0.9)

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding keeps the size), got {value}")
        return value


def _default_blocks() -> list[ConvBlock]:
    return [ConvBlock(filters=32), ConvBlock(filters=64)]


class ImageCNNHyperparameters(BaseModel):
    """Hyperparameters of ``image-cnn``. The defaults reach the quality bars (digits 8x8, MNIST 28x28)."""

    model_config = ConfigDict(extra="forbid")

    image_size: list[int] | None = Field(
        default=None,
        description=f"[height, width] (or one number for a square) images are converted to, {MIN_SIDE}..{MAX_SIDE}; "
        f"None: the dataset's most common size, shrunk (aspect kept) so no side exceeds {DEFAULT_MAX_SIDE}.",
    )
    channels: Literal[1, 3] | None = Field(
        default=None, description="1 (grayscale) or 3 (RGB); None: 3 when any image has colour, else 1."
    )
    conv_blocks: list[ConvBlock] = Field(default_factory=_default_blocks, min_length=1, max_length=8)
    dense_units: list[int] = Field(
        default=[128], max_length=4, description="Hidden dense layers after the conv blocks (each 1..4096)."
    )
    dropout: float = Field(default=0.3, ge=0.0, le=0.9, description="Dropout after each dense layer.")
    augmentation: bool = Field(default=False, description="Random small shifts/rotations of training images.")
    max_shift: float = Field(default=0.1, ge=0.0, le=0.3, description="Augmentation: largest shift, fraction of size.")
    max_rotation: float = Field(default=10.0, ge=0.0, le=45.0, description="Augmentation: largest rotation, degrees.")
    horizontal_flip: bool = Field(default=False, description="Augmentation: mirror half the images (not for digits).")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="Momentum (sgd only).")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    epochs: int = Field(default=30, ge=1, le=1000, description="Most epochs; early stopping may end sooner.")
    batch_size: int = Field(default=64, ge=1, le=4096)
    l1: float = Field(default=0.0, ge=0.0, le=1.0, description="L1 penalty on weights, added to the loss.")
    l2: float = Field(default=1e-4, ge=0.0, le=1.0, description="L2 penalty, applied as the optimizer's weight decay.")
    early_stopping_patience: int = Field(
        default=6, ge=0, le=1000, description="Epochs without validation improvement before stopping; 0 = off."
    )
    validation_split: float = Field(
        default=0.1, ge=0.0, le=0.5, description="Fraction held out for early stopping; 0 = none."
    )
    test_split: float = Field(default=0.2, ge=0.05, le=0.5, description="Fraction held out for evaluation.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _size_bounds(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(value) != 2:
            raise ValueError("image_size is [height, width] or one number for a square")
        for side in value:
            if not MIN_SIDE <= side <= MAX_SIDE:
                raise ValueError(f"each side must be between {MIN_SIDE} and {MAX_SIDE}, got {side}")
        return value

    @field_validator("dense_units")
    @classmethod
    def _dense_widths(cls, value: list[int]) -> list[int]:
        for width in value:
            if not 1 <= width <= 4096:
                raise ValueError(f"each dense layer width must be between 1 and 4096, got {width}")
        return value

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size after the conv blocks (each pooling halves it, rounding down)."""
        for block in self.conv_blocks:
            if block.pooling != "none":
                height, width = height // 2, width // 2
        return height, width

    def check_size(self, height: int, width: int) -> None:
        """InvalidInput when pooling would shrink ``height`` x ``width`` to nothing."""
        out_h, out_w = self.output_size(height, width)
        if out_h < 1 or out_w < 1:
            pools = sum(block.pooling != "none" for block in self.conv_blocks)
            raise InvalidInput(
                f"{pools} pooling blocks shrink {height} x {width} images to nothing; use fewer pooling blocks "
                "(pooling: 'none') or a larger image_size",
                errors=[{"loc": ["hyperparameters", "conv_blocks"], "msg": "too much pooling for the image size"}],
            )


def default_image_size(height: int, width: int) -> list[int]:
    """The size a dataset's most common image size converts to when the user names none."""
    scale = min(1.0, DEFAULT_MAX_SIDE / max(height, width, 1))
    return [max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))]


def parse_hyperparameters(raw: dict[str, Any] | None) -> ImageCNNHyperparameters:
    """Validate user input; an unknown or out-of-range field raises InvalidInput naming it."""
    try:
        hp = ImageCNNHyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        errors = [{"loc": ["hyperparameters", *error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'hyperparameters'}: {error['msg']}"
            for error in errors
        )
        raise InvalidInput(f"invalid hyperparameters: {summary}", errors=errors) from None
    if hp.image_size is not None:
        hp.check_size(*hp.image_size)
    return hp


def _field_error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"loc": ["body", field], "msg": message}])


def plan(dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
    """Image datasets only; the target is the label; records the dataset's size and channels as defaults."""
    if dataset.kind != "images":
        raise _field_error(
            "family",
            f"{FAMILY_NAME} trains on images; dataset '{dataset.name}' is {dataset.kind}. Upload a zip with one "
            "folder of PNG/JPEG images per class, or an NPZ/Parquet of pixel arrays with labels",
        )
    if request.target not in (None, TARGET):
        raise _field_error("target", f"an image dataset's target is '{TARGET}' (or leave it out)")
    if request.task not in (None, "classification"):
        raise _field_error("task", f"{FAMILY_NAME} only does classification")
    if request.columns:  # a role map meant for another family: say so rather than ignore it
        raise _field_error("columns", f"{FAMILY_NAME} takes no column roles (images and their folder labels)")
    image = dataset.column("image") or {}
    label = dataset.column(TARGET) or {}
    classes = int(label.get("unique", 0))
    if classes < 2:
        raise _field_error("dataset_id", f"dataset '{dataset.name}' has {classes} class(es); at least 2 are needed")
    extra = {
        "image_size": default_image_size(int(image.get("height", 28)), int(image.get("width", 28))),
        "channels": int(image.get("channels", 1)),
        "classes": classes,
    }
    return JobPlan(task="classification", target=TARGET, extra=extra)


def describe() -> dict[str, Any]:
    """JSON description for ``maas families``."""
    return {
        "name": FAMILY_NAME,
        "tasks": ["classification"],
        "data": "images",
        "description": "Convolutional network over images (zip of class folders, NPZ or Parquet of pixels); "
        "predict with base64 PNG/JPEG or pixel arrays, answers labels, probabilities and top-k.",
        "hyperparameters": ImageCNNHyperparameters.model_json_schema(),
        "artifact": "onnx",
    }


@dataclass(frozen=True)
class ImageCNNFamily:
    """The family's entry in :data:`maas.models.FAMILIES`."""

    name: str = FAMILY_NAME
    task_kinds: tuple[str, ...] = ("classification",)
    data_kinds: tuple[str, ...] = ("images",)
    hyperparameters: type[ImageCNNHyperparameters] = ImageCNNHyperparameters

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> ImageCNNHyperparameters:
        return parse_hyperparameters(raw)

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        return plan(dataset, request)

    def describe(self) -> dict[str, Any]:
        return describe()


IMAGE_CNN = ImageCNNFamily()
