"""A loaded ``text-classifier`` model: the tokenizer (JSON, from training) + an ONNX Runtime session.

Instances are raw strings or ``{"text": "..."}`` objects (checked by :func:`maas.data.text.instance_text`).
Every text is truncated/padded to the model's fixed length, so rows are independent and batches of any
size merge along axis 0 (``batchable``). No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from maas.data.text import instance_text
from maas.serving.servable import ModelIdentity

# The tokenizer's padding token and id, fixed at training (maas.training.text_classifier).
PAD_ID = 0
PAD_TOKEN = "[PAD]"  # noqa: S105 (a tokenizer's special token, not a secret)


class TextOnnxModel:
    accepted_parameters: frozenset[str] = frozenset()
    batchable = True

    def __init__(
        self, identity: ModelIdentity, onnx_bytes: bytes, preprocessing: dict[str, Any], signature: dict[str, Any]
    ) -> None:
        self.identity = identity
        self.signature = signature
        self.max_length = int(preprocessing["max_length"])
        self.tokenizer = Tokenizer.from_str(preprocessing["tokenizer"])
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN, length=self.max_length)
        self.classes: list[Any] = list(signature["classes"])
        self._class_keys = [str(c) for c in self.classes]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # batching supplies the parallelism
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        self._input_name: str = signature.get("onnx_input", "token_ids")
        self._output_name: str = signature.get("onnx_output", "probabilities")

    def encode(self, instances: list[Any], parameters: Mapping[str, Any]) -> np.ndarray[Any, Any]:
        """Token ids ``[n, max_length]``; InvalidInput names the first bad instance (none is tokenised
        before all are checked)."""
        texts = [instance_text(instance, index) for index, instance in enumerate(instances)]
        encodings = self.tokenizer.encode_batch(texts)
        return np.asarray([encoding.ids for encoding in encodings], dtype=np.int64).reshape(-1, self.max_length)

    def run(self, features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        (output,) = self._session.run([self._output_name], {self._input_name: features})
        return np.asarray(output)

    def decode(self, output: np.ndarray[Any, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
        best = output.argmax(axis=1)
        return {
            "predictions": [self.classes[i] for i in best.tolist()],
            "probabilities": [dict(zip(self._class_keys, row, strict=True)) for row in output.tolist()],
        }
