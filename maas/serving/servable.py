"""The contract of a loaded model (STYLE habit 1): load once, then encode → run → decode per request.

Every family's serving runtime is a class built by ``cls(identity, artifact, preprocessing, signature)``
(see :data:`maas.serving.loaders.RUNTIMES`), torch-free: ONNX Runtime or numpy only.

- ``encode(instances, parameters)`` validates the request's instances (raising ``InvalidInput`` naming the
  instance and field) and turns them into the runtime's input;
- ``run(features)`` computes; when ``batchable`` is True, features are an ``ndarray`` with one row per
  instance and the adaptive batcher merges requests along axis 0 (concatenate, run once, split);
- ``decode(output, parameters)`` returns the JSON fields of the response (``predictions`` at least).

A runtime may list the ``parameters`` it understands in ``accepted_parameters`` (a frozenset; default
none): the server refuses any other with a 422, so a misspelt option is never silently ignored.

A model that is not batchable (say, a recommender answering several kinds of question) is run on the event
loop as ``decode(run(encode(...)))``: it must be cheap (well under a millisecond per instance).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    model_version_id: str
    model_name: str
    version: int


class ServableModel(Protocol):
    identity: ModelIdentity
    batchable: bool

    def encode(self, instances: list[Any], parameters: Mapping[str, Any]) -> Any: ...

    def run(self, features: Any) -> Any: ...

    def decode(self, output: Any, parameters: Mapping[str, Any]) -> dict[str, Any]: ...
