"""A loaded ``image-cnn`` model: an ONNX Runtime session fed with images converted as in training.

An instance is a base64 PNG/JPEG string (a ``data:image/...;base64,`` prefix is fine), ``{"b64": ...}``,
``{"image": <string or pixel array>}``, or a pixel array ``[H][W]`` / ``[H][W][C]`` with values 0-255.
Each is converted with :func:`maas.data.image_pixels.conform` (the training conversion) to the model's
size and channels. ``parameters.top_k`` sets how many labels ``top_k`` lists per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from maas.data.image_pixels import check_pixel_array, conform, decode_base64, decode_image
from maas.errors import InvalidInput
from maas.serving.servable import ModelIdentity

MAX_ENCODED_BYTES = 8 * 1024 * 1024  # per instance; the request body limit usually bites first


class ImageOnnxModel:
    accepted_parameters = frozenset({"top_k"})
    batchable = True
    # Decoding a PNG/JPEG is milliseconds to a second (a 4096 x 4096 PNG): never on the event loop.
    encode_in_thread = True

    def __init__(
        self, identity: ModelIdentity, artifact: bytes, preprocessing: dict[str, Any], signature: dict[str, Any]
    ) -> None:
        self.identity = identity
        self.signature = signature
        self.height, self.width = (int(side) for side in preprocessing["image_size"])
        self.channels = int(preprocessing["channels"])
        self.classes: list[Any] = list(signature["classes"])
        self._class_keys = [str(c) for c in self.classes]
        self.default_top_k = min(5, len(self.classes))
        options = ort.SessionOptions()
        # one intra-op thread per session: the adaptive batcher supplies the parallelism
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
        self._input_name: str = signature.get("onnx_input", "features")
        self._output_name: str = signature.get("onnx_output", "probabilities")

    def _top_k(self, parameters: Mapping[str, Any]) -> int:
        value = parameters.get("top_k", self.default_top_k)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= len(self.classes):
            raise InvalidInput(
                f"parameters.top_k must be an integer from 1 to {len(self.classes)} (the number of classes)",
                errors=[{"loc": ["body", "parameters", "top_k"], "msg": "out of range"}],
            )
        return value

    def _pixels(self, instance: Any, where: str) -> np.ndarray:
        if isinstance(instance, dict):
            keys = [key for key in ("b64", "image") if key in instance]
            if len(keys) != 1 or len(instance) != 1:
                raise InvalidInput(
                    f'{where}: an object instance must have exactly one key, "b64" or "image"',
                    errors=[{"loc": [where], "msg": "unexpected keys"}],
                )
            instance = instance[keys[0]]
        if isinstance(instance, str):
            image = decode_image(decode_base64(instance, where, max_bytes=MAX_ENCODED_BYTES), where)
            return conform(image, self.height, self.width, self.channels)
        if isinstance(instance, list):
            return conform(check_pixel_array(instance, where), self.height, self.width, self.channels)
        raise InvalidInput(
            f"{where}: expected a base64 PNG/JPEG string or a pixel array [height][width](+[channels]) of 0-255 "
            f"values; got {type(instance).__name__}",
            errors=[{"loc": [where], "msg": "not an image"}],
        )

    def encode(self, instances: list[Any], parameters: Mapping[str, Any]) -> np.ndarray:
        """float32 ``[N, C, H, W]`` pixels 0-255; raises InvalidInput naming the instance."""
        self._top_k(parameters)
        if not instances:
            raise InvalidInput("instances is empty; send at least one image", errors=[{"loc": ["body", "instances"]}])
        batch = np.empty((len(instances), self.channels, self.height, self.width), dtype=np.float32)
        for i, instance in enumerate(instances):
            batch[i] = self._pixels(instance, f"instances[{i}]")
        return batch

    def run(self, features: np.ndarray) -> np.ndarray:
        (output,) = self._session.run([self._output_name], {self._input_name: features})
        return np.asarray(output)

    def decode(self, output: np.ndarray, parameters: Mapping[str, Any]) -> dict[str, Any]:
        k = self._top_k(parameters)
        order = np.argsort(-output, axis=1, kind="stable")[:, :k]
        rows = output.tolist()
        return {
            "predictions": [self.classes[int(best[0])] for best in order],
            "probabilities": [dict(zip(self._class_keys, row, strict=True)) for row in rows],
            "top_k": [
                [{"label": self.classes[int(j)], "probability": row[int(j)]} for j in best]
                for best, row in zip(order, rows, strict=True)
            ],
        }
