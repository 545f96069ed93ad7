"""Export trained networks to ONNX with the serving head inside the graph.

The exported graph takes ``features`` (float32 ``[batch, n_features]``, dynamic batch) and returns either
``probabilities`` (float32 ``[batch, n_classes]``, softmax/sigmoid applied) or ``prediction`` (float32
``[batch]``, in target units: the training-time target standardisation is undone in the graph).

We use the TorchScript-based exporter (``dynamo=False``): for plain MLPs it is exact and takes well under a
second, where the dynamo exporter takes seconds per model. Every export is checked against torch with
ONNX Runtime (:func:`verify_onnx`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

INPUT_NAME = "features"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
OPSET = 17


class ClassifierHead(nn.Module):
    """Logits → class probabilities. One logit means a binary model trained with BCE: ``[1-p, p]``."""

    def __init__(self, network: nn.Module, single_logit: bool) -> None:
        super().__init__()
        self.network = network
        self.single_logit = single_logit

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.network(features)
        if self.single_logit:
            positive = torch.sigmoid(logits)
            return torch.cat([1.0 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)


class RegressorHead(nn.Module):
    """Standardised output → target units, ``[batch]``."""

    def __init__(self, network: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(features)[:, 0] * self.std + self.mean
        return out


def serving_module(
    network: nn.Module,
    task: Literal["classification", "regression"],
    *,
    single_logit: bool = False,
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> nn.Module:
    """The network with its serving head, in eval mode."""
    head: nn.Module
    if task == "classification":
        head = ClassifierHead(network, single_logit)
    else:
        head = RegressorHead(network, target_mean, target_std)
    return head.eval()


def output_name(task: Literal["classification", "regression"]) -> str:
    return PROBABILITIES if task == "classification" else PREDICTION


def export_onnx(module: nn.Module, n_features: int, output: str) -> bytes:
    """Serialise ``module`` (a serving module) to ONNX bytes with a dynamic batch dimension."""
    module.eval()
    example = torch.zeros(2, n_features, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="maas-onnx-") as tmp, warnings.catch_warnings():
        path = Path(tmp) / "model.onnx"
        # The TorchScript exporter may announce its own deprecation; callers check the result with verify_onnx.
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[INPUT_NAME],
            output_names=[output],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        return path.read_bytes()


def run_onnx(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    """Run exported bytes on CPU with ONNX Runtime (tests and evaluation; serving keeps its own session)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})
    return np.asarray(outputs[0])


def verify_onnx(module: nn.Module, onnx_bytes: bytes, features: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """Check ONNX Runtime agrees with torch on ``features``; returns the ONNX outputs."""
    with torch.no_grad():
        expected = module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).numpy()
    actual = run_onnx(onnx_bytes, features)
    if actual.shape != expected.shape or not np.allclose(actual, expected, atol=atol, rtol=1e-4):
        raise RuntimeError("the exported ONNX model disagrees with the torch model")
    return actual
