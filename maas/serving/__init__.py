"""Endpoints and the prediction data plane (ONNX Runtime, adaptive batching, caches)."""
