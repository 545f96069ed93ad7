"""Prefixed random identifiers (DESIGN decision 3): never auto-increment integers in URLs."""

import secrets


def new_id(prefix: str) -> str:
    """Return e.g. ``ds_3f9c0a1b2c4d5e6f7a8b9c0d``: 96 random bits, URL-safe, typed by its prefix."""
    return f"{prefix}_{secrets.token_hex(12)}"
