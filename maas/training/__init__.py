"""Training: the generic trainer, checkpoints, metrics, ONNX export and per-family entry points.

Everything here may import torch, so this package is imported by worker processes only; the entry point
of each family is named in :mod:`maas.training.registry`. Nothing is re-exported here so that
importing a torch-free module (``maas.training.metrics``) stays cheap.
"""
