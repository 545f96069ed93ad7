"""Fine-tuning records in OpenAI's JSONL shapes, checked line by line and kept as a table.

Two shapes are accepted, one per line, all lines of a file in the same shape:

- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` with at least one
  assistant message (the tokens the model learns to produce);
- prompt/completion: ``{"prompt": "...", "completion": "..."}``.

A file becomes a Parquet table (the platform's dataset format) with a ``messages`` column holding each
conversation as a JSON string, or ``prompt`` and ``completion`` columns. Parquet rejects nested columns
(:mod:`maas.data.formats`), and a JSON string keeps each conversation exactly as sent.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from maas.errors import InvalidInput

RecordShape = Literal["chat", "prompt_completion"]
ROLES = ("system", "user", "assistant")
MESSAGES_COLUMN = "messages"
PROMPT_COLUMN = "prompt"
COMPLETION_COLUMN = "completion"
MAX_MESSAGES = 1000
_FILE_LOC = ["body", "file"]


@dataclass(frozen=True)
class Records:
    shape: RecordShape
    rows: list[dict[str, Any]]  # chat: {"messages": [...]}; prompt_completion: {"prompt", "completion"}


def _bad_line(line_number: int, message: str) -> InvalidInput:
    detail = f"line {line_number}: {message}"
    return InvalidInput(detail, errors=[{"loc": [*_FILE_LOC, f"line {line_number}"], "msg": message}])


def _is_unicode(text: str) -> bool:
    """False for a text holding a lone UTF-16 surrogate (JSON may spell ``"\\ud800"``), which is no character:
    it cannot be written to Parquet or tokenized, so it is refused where the line is named."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A conversation checked: a list of {"role", "content"} with known roles and at least one assistant
    message. ``where`` prefixes the error (``"line 3"``)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInput(f"{where}: {len(messages)} messages; at most {MAX_MESSAGES} per conversation")
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"{where}: messages[{index}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidInput(f"{where}: messages[{index}].role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise InvalidInput(f"{where}: messages[{index}].content must be a string")
        if not _is_unicode(content):
            raise InvalidInput(f"{where}: messages[{index}].content holds a lone UTF-16 surrogate (not valid Unicode)")
        unknown = sorted(set(message) - {"role", "content", "name", "weight"})
        if unknown:
            raise InvalidInput(f"{where}: messages[{index}] has unsupported fields {unknown}")
        checked.append({"role": role, "content": content})
    if not any(message["role"] == "assistant" for message in checked):
        raise InvalidInput(f"{where}: a conversation needs at least one assistant message to learn from")
    return checked


def _record(line_number: int, value: Any) -> tuple[RecordShape, dict[str, Any]]:
    if not isinstance(value, dict):
        raise _bad_line(line_number, "each line must be a JSON object")
    if MESSAGES_COLUMN in value:
        extra = sorted(set(value) - {MESSAGES_COLUMN, "tools", "parallel_tool_calls"})
        if extra:
            raise _bad_line(line_number, f"unexpected fields {extra} beside 'messages'")
        try:
            messages = check_messages(value[MESSAGES_COLUMN], f"line {line_number}")
        except InvalidInput as exc:
            loc = [*_FILE_LOC, f"line {line_number}"]
            raise InvalidInput(exc.detail, errors=[{"loc": loc, "msg": exc.detail}]) from None
        return "chat", {MESSAGES_COLUMN: messages}
    if PROMPT_COLUMN in value or COMPLETION_COLUMN in value:
        prompt, completion = value.get(PROMPT_COLUMN), value.get(COMPLETION_COLUMN)
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise _bad_line(line_number, "'prompt' and 'completion' must both be strings")
        if not completion:
            raise _bad_line(line_number, "'completion' is empty: there is nothing to learn from this line")
        if not (_is_unicode(prompt) and _is_unicode(completion)):
            raise _bad_line(line_number, "'prompt' or 'completion' holds a lone UTF-16 surrogate (not valid Unicode)")
        extra = sorted(set(value) - {PROMPT_COLUMN, COMPLETION_COLUMN})
        if extra:
            raise _bad_line(line_number, f"unexpected fields {extra} beside 'prompt' and 'completion'")
        return "prompt_completion", {PROMPT_COLUMN: prompt, COMPLETION_COLUMN: completion}
    raise _bad_line(
        line_number,
        f'expected {{"messages": [...]}} (chat) or {{"prompt": "...", "completion": "..."}}, got keys {sorted(value)}',
    )


def parse_jsonl(content: bytes, *, max_records: int = 1_000_000) -> Records:
    """Parse a fine-tuning file; ``InvalidInput`` names the first bad line (1-based) and what is wrong."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad_line(content[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text") from None
    shape: RecordShape | None = None
    rows: list[dict[str, Any]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad_line(line_number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:  # ``[[[[...]]]]`` a million deep: no record is shaped like that
            raise _bad_line(line_number, "the JSON is nested too deeply") from None
        line_shape, row = _record(line_number, value)
        if shape is not None and line_shape != shape:
            raise _bad_line(line_number, f"this line is a {line_shape} record but earlier lines are {shape} records")
        shape = line_shape
        rows.append(row)
        if len(rows) > max_records:
            raise _bad_line(line_number, f"more than {max_records} records")
    if shape is None:
        detail = "the file has no records: upload JSONL with one chat or prompt/completion object per line"
        raise InvalidInput(detail, errors=[{"loc": _FILE_LOC, "msg": detail}])
    return Records(shape=shape, rows=rows)


def to_frame(records: Records) -> pd.DataFrame:
    if records.shape == "chat":
        return pd.DataFrame(
            {MESSAGES_COLUMN: [json.dumps(row[MESSAGES_COLUMN], ensure_ascii=False) for row in records.rows]}
        )
    return pd.DataFrame(
        {
            PROMPT_COLUMN: [row[PROMPT_COLUMN] for row in records.rows],
            COMPLETION_COLUMN: [row[COMPLETION_COLUMN] for row in records.rows],
        }
    )


def to_parquet(records: Records) -> bytes:
    buffer = io.BytesIO()
    to_frame(records).to_parquet(buffer, index=False)
    return buffer.getvalue()


def frame_to_jsonl(frame: pd.DataFrame) -> bytes:
    """The records of a table written back as JSONL (a file's ``/content``)."""
    lines: list[str] = []
    if MESSAGES_COLUMN in frame.columns:
        lines = [
            json.dumps({MESSAGES_COLUMN: json.loads(value)}, ensure_ascii=False) for value in frame[MESSAGES_COLUMN]
        ]
    elif PROMPT_COLUMN in frame.columns and COMPLETION_COLUMN in frame.columns:
        lines = [
            json.dumps({PROMPT_COLUMN: str(prompt), COMPLETION_COLUMN: str(completion)}, ensure_ascii=False)
            for prompt, completion in zip(frame[PROMPT_COLUMN], frame[COMPLETION_COLUMN], strict=True)
        ]
    else:
        records = frame.to_dict(orient="records")
        lines = [json.dumps(record, ensure_ascii=False, default=str) for record in records]
    return ("\n".join(lines) + "\n").encode()


def shape_of_columns(names: list[str]) -> RecordShape | None:
    """The record shape a table's columns hold, if any."""
    if MESSAGES_COLUMN in names:
        return "chat"
    if PROMPT_COLUMN in names and COMPLETION_COLUMN in names:
        return "prompt_completion"
    return None
