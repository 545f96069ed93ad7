"""The torch network of ``image-cnn``; imported only by training code.

The network takes raw 0-255 pixels ``[N, C, H, W]`` (uint8 while training, to keep a dataset 4x smaller
in memory; float32 in the exported graph) and normalises them itself with the training set's per-channel
mean and standard deviation, so the ONNX graph needs no preprocessing outside it.
"""

from __future__ import annotations

import torch
from torch import nn

from maas.models.image_cnn import ConvBlock, ImageCNNHyperparameters


def _block(in_channels: int, block: ConvBlock) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, block.filters, block.kernel_size, padding=block.kernel_size // 2, bias=not block.batch_norm
        )
    ]
    if block.batch_norm:
        layers.append(nn.BatchNorm2d(block.filters))
    layers.append(nn.ReLU())
    if block.pooling == "max":
        layers.append(nn.MaxPool2d(2))
    elif block.pooling == "avg":
        layers.append(nn.AvgPool2d(2))
    if block.dropout > 0:
        layers.append(nn.Dropout(block.dropout))
    return layers


class ImageCNN(nn.Module):
    """Normalise → conv blocks → flatten → dense layers (ReLU, dropout) → ``n_classes`` logits."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_classes: int,
        hyperparameters: ImageCNNHyperparameters,
        mean: list[float],
        std: list[float],
    ) -> None:
        super().__init__()
        channels, height, width = shape
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, channels, 1, 1))
        self.register_buffer("scale", 1.0 / torch.tensor(std, dtype=torch.float32).reshape(1, channels, 1, 1))
        layers: list[nn.Module] = []
        in_channels = channels
        for block in hyperparameters.conv_blocks:
            layers += _block(in_channels, block)
            in_channels = block.filters
        out_h, out_w = hyperparameters.output_size(height, width)
        layers.append(nn.Flatten())
        width_in = in_channels * out_h * out_w
        for units in hyperparameters.dense_units:
            layers += [nn.Linear(width_in, units), nn.ReLU()]
            if hyperparameters.dropout > 0:
                layers.append(nn.Dropout(hyperparameters.dropout))
            width_in = units
        layers.append(nn.Linear(width_in, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        normalised = (pixels.float() - self.mean) * self.scale
        out: torch.Tensor = self.layers(normalised)
        return out


def build_network(
    shape: tuple[int, int, int],
    n_classes: int,
    hyperparameters: ImageCNNHyperparameters,
    mean: list[float],
    std: list[float],
) -> ImageCNN:
    """Build with weights drawn from ``hyperparameters.seed`` (deterministic, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hyperparameters.seed)
        return ImageCNN(shape, n_classes, hyperparameters, mean, std)
