"""The OpenAI-compatible API under ``/v1`` (DESIGN decision 9): thin routers over the serving packages."""
