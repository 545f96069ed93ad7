"""Text values, checked the same way when a model trains and when it serves.

A text is a string with something other than whitespace in it and at most :data:`MAX_TEXT_CHARS`
characters. The cap keeps one request or one row from holding a worker: tokenising is linear, but a
megabyte string would be truncated to a few dozen tokens anyway, so it is almost certainly a mistake.
"""

from __future__ import annotations

from typing import Any

from maas.errors import InvalidInput, PayloadTooLarge

MAX_TEXT_CHARS = 100_000


def instance_text(instance: Any, index: int) -> str:
    """The text of one prediction instance: a string, or an object ``{"text": "..."}``.

    Raises ``InvalidInput`` (``PayloadTooLarge`` for an over-long text) naming the instance index."""
    loc: list[str | int] = ["body", "instances", index]
    value = instance
    if isinstance(instance, dict):
        if set(instance) != {"text"}:
            found = ", ".join(repr(key) for key in instance) or "no keys"
            detail = f'instance {index}: an object instance needs exactly the key "text" (found {found})'
            raise InvalidInput(detail, errors=[{"loc": loc, "msg": detail}])
        value = instance["text"]
        loc = [*loc, "text"]
    if not isinstance(value, str):
        detail = f'instance {index}: expected a string (or {{"text": string}}), got {_json_type(value)}'
        raise InvalidInput(detail, errors=[{"loc": loc, "msg": detail}])
    if not value.strip():
        detail = f"instance {index}: the text is empty or only whitespace; send some words to classify"
        raise InvalidInput(detail, errors=[{"loc": loc, "msg": detail}])
    if len(value) > MAX_TEXT_CHARS:
        detail = (
            f"instance {index}: the text has {len(value)} characters; at most {MAX_TEXT_CHARS} are accepted "
            "(split long documents into passages)"
        )
        raise PayloadTooLarge(detail, errors=[{"loc": loc, "msg": detail}])
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
