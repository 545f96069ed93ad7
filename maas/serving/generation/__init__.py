"""Text generation for causal-lm models: loader, continuous-batching engine, sampling, streaming.

Only ``service`` and ``params`` are light to import; the rest imports torch and is loaded on first use.
"""
