"""JSON Lines uploads: detected by name or content, one flat object per line, errors that name the line."""

from __future__ import annotations

import pytest

from maas.data.formats import load_frame, read_table
from maas.errors import InvalidInput


def _error(content: bytes, filename: str = "data.jsonl") -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        read_table(content, filename)
    assert caught.value.errors and caught.value.errors[0]["loc"] == ["body", "file"]
    return caught.value


def test_reads_jsonl_by_name_with_missing_keys_and_blank_lines() -> None:
    content = b'{"text": "good film", "label": "pos"}\n\n{"text": "dull", "label": "neg", "stars": 1}\r\n'
    frame, fmt = read_table(content, "reviews.ndjson")
    assert fmt == "jsonl"
    assert list(frame.columns) == ["text", "label", "stars"]
    assert frame["text"].tolist() == ["good film", "dull"]
    assert frame["stars"].isna().tolist() == [True, False]
    assert load_frame(content, "jsonl").equals(frame)


def test_detected_by_content_whatever_the_name() -> None:
    frame, fmt = read_table('\ufeff  {"a": 1, "b": "x\u2028y"}\n{"a": 2, "b": "z"}\n'.encode(), "upload.txt")
    assert fmt == "jsonl" and frame["a"].tolist() == [1, 2] and frame["b"][0] == "x\u2028y"


def test_csv_and_parquet_names_are_unaffected() -> None:
    frame, fmt = read_table(b"text,label\nhi,a\n", "data.csv")
    assert fmt == "csv" and len(frame) == 1


def test_bad_json_names_the_line() -> None:
    error = _error(b'{"a": 1}\n{"a": 2\n')
    assert "line 2" in error.detail and "not valid JSON" in error.detail
    assert error.errors[0]["line"] == 2


def test_non_object_line() -> None:
    error = _error(b'{"a": 1}\n[1, 2]\n')
    assert "line 2" in error.detail and "not an object" in error.detail


def test_nested_values_are_refused_with_the_key() -> None:
    error = _error(b'{"a": 1, "meta": {"x": 1}}\n')
    assert "line 1" in error.detail and "'meta'" in error.detail


def test_empty_jsonl_and_invalid_utf8() -> None:
    assert "empty" in _error(b"\n  \n", "x.jsonl").detail
    error = _error(b'{"a": "\xff"}\n')
    assert "UTF-8" in error.detail and "JSON Lines" in error.detail


def test_too_many_keys() -> None:
    line = "{" + ", ".join(f'"c{i}": {i}' for i in range(5)) + "}\n"
    with pytest.raises(InvalidInput) as caught:
        read_table(line.encode(), "wide.jsonl", max_columns=3)
    assert "4 columns" in caught.value.detail and "at most 3" in caught.value.detail


def test_a_number_too_long_for_python_is_a_422_naming_the_line() -> None:
    # json.loads raises a plain ValueError (not JSONDecodeError) past 4,300 digits: it was a 500
    error = _error(b'{"a": 1}\n{"a": 1' + b"0" * 5000 + b"}\n")
    assert "line 2" in error.detail and "digits" in error.detail and error.errors[0]["line"] == 2


def test_deeply_nested_brackets_are_a_422_naming_the_line() -> None:
    # json.loads raises RecursionError on ~100k nested brackets: it was a 500
    error = _error(b'{"a": 1}\n{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    assert "line 2" in error.detail and "too deeply" in error.detail
