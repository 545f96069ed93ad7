"""Fine-tuning JSONL (``/v1/files``): every bad line is a 400 naming the line, never a 500."""

from __future__ import annotations

import pytest

from maas.data import chat_records
from maas.errors import InvalidInput

GOOD = b'{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}\n'


@pytest.mark.parametrize(
    "line",
    [
        b'{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "A"}]}',
        b'{"prompt": "x", "completion": "y \\udfff"}',
    ],
)
def test_a_lone_surrogate_names_its_line(line: bytes) -> None:
    # Valid JSON but no character: the upload parsed, then writing the Parquet table raised
    # UnicodeEncodeError, a 500.
    with pytest.raises(InvalidInput, match=r"line 2: .*surrogate"):
        chat_records.to_parquet(chat_records.parse_jsonl(GOOD + line + b"\n"))


def test_brackets_nested_too_deep_name_their_line() -> None:
    # json.loads raised RecursionError, which was a 500.
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidInput, match="line 2: the JSON is nested too deeply"):
        chat_records.parse_jsonl(GOOD + deep + b"\n")


def test_a_pair_of_surrogates_is_an_emoji_and_kept() -> None:
    line = b'{"prompt": "\\ud83d\\ude00", "completion": "ok"}\n'
    records = chat_records.parse_jsonl(line)
    assert records.rows[0]["prompt"] == "\U0001f600"
    chat_records.to_parquet(records)
