"""Tabular file formats: turn uploaded bytes into a DataFrame, or say exactly what to fix.

Parquet is recognised by its magic bytes (``PAR1``); JSON Lines (one JSON object per line) by a
``.jsonl``/``.ndjson`` name or content whose first non-blank character is ``{``; anything else is read as
CSV. The uploaded file name is only a hint (format and error messages): it is never used as a path.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from maas.errors import InvalidInput

TableFormat = Literal["csv", "parquet", "jsonl"]

_PARQUET_MAGIC = b"PAR1"
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_FILE_LOC = ["body", "file"]
MAX_COLUMNS = 2000  # the default of the MAAS_MAX_COLUMNS setting


def _invalid(detail: str, **extra: Any) -> InvalidInput:
    return InvalidInput(detail, errors=[{"loc": _FILE_LOC, "msg": detail, **extra}])


def read_table(content: bytes, filename: str, *, max_columns: int = MAX_COLUMNS) -> tuple[pd.DataFrame, TableFormat]:
    """Parse an upload into a DataFrame and name its format; ``InvalidInput`` says what to fix.

    The column count is checked against ``max_columns`` from the header alone, before anything is parsed:
    profiling costs about a millisecond per column, so a 1 MB file of 50,000 columns would otherwise hold
    a server thread for half a minute."""
    if not content.strip():
        raise _invalid("the file is empty; upload a CSV file with a header row and data rows, or a Parquet file")
    if content[:4] == _PARQUET_MAGIC:
        _check_column_count(_parquet_column_count(content), max_columns)
        frame = _parse_parquet(content)
        _check_columns([str(name) for name in frame.columns])
        _check_has_rows(frame)
        return frame, "parquet"
    if filename.lower().endswith(_PARQUET_SUFFIXES):
        raise _invalid(
            "the file is named like a Parquet file but does not start with the Parquet magic bytes 'PAR1'; "
            "it is corrupt or not Parquet: re-export it with pandas.DataFrame.to_parquet or pyarrow"
        )
    if filename.lower().endswith(_JSONL_SUFFIXES) or content.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{":
        frame = _parse_jsonl(_decode_text(content, "JSON Lines"), max_columns)
        _check_has_rows(frame)
        return frame, "jsonl"
    text = _decode_csv(content)
    header = _check_csv_rows(text, max_columns)
    _check_columns(header)
    frame = _parse_csv(text)
    _check_has_rows(frame)
    return frame, "csv"


def load_frame(content: bytes, format: str) -> pd.DataFrame:
    """Load a stored dataset version (already validated by ``read_table`` at upload)."""
    if format == "parquet":
        return _parse_parquet(content)
    if format == "csv":
        return _parse_csv(_decode_csv(content))
    if format == "jsonl":
        return _parse_jsonl(_decode_text(content, "JSON Lines"), max_columns=None)
    raise ValueError(f"unknown dataset format {format!r}")


# --- CSV -----------------------------------------------------------------------------------------------


def _decode_csv(content: bytes) -> str:
    return _decode_text(content, "CSV")


def _decode_text(content: bytes, kind: str) -> str:
    nul = content.find(b"\x00")
    if nul != -1:
        raise _invalid(
            f"the file is binary, not {kind} text: it contains a NUL byte at byte offset {nul}; "
            f"upload a UTF-8 {kind} file or a Parquet file"
        )
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        bad = content[exc.start : exc.start + 1].hex()
        raise _invalid(
            f"the file is not valid UTF-8 text: byte 0x{bad} at byte offset {exc.start} (line {line}) "
            f"cannot be decoded; re-save the {kind} file with UTF-8 encoding (or upload Parquet)"
        ) from None


def _check_csv_rows(text: str, max_columns: int) -> list[str]:
    """Return the header after checking that every data line has as many fields as the header.

    pandas silently pads short rows with NaN (and turns a long first row into an index), so we count the
    fields ourselves, with the same dialect pandas uses (comma, double quotes), skipping blank lines.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    record_start = 1
    try:
        for fields in reader:
            this_start, record_start = record_start, reader.line_num + 1
            if not fields:
                continue
            if header is None:
                header = fields
                _check_column_count(len(header), max_columns)
            elif len(fields) != len(header):
                line = this_start  # where the record begins (a quoted field may span lines)
                raise _invalid(
                    f"line {line} has {len(fields)} fields but the header has {len(header)}; "
                    "every row needs one value per column (quote values that contain commas)",
                    line=line,
                    expected=len(header),
                    found=len(fields),
                )
    except csv.Error as exc:
        raise _invalid(f"line {reader.line_num} cannot be read as CSV: {exc}", line=reader.line_num) from None
    if header is None:
        raise _invalid("the file is empty; upload a CSV file with a header row and data rows, or a Parquet file")
    _check_quotes_closed(text, this_start)
    return header


def _check_quotes_closed(text: str, last_start: int) -> None:
    """The lenient reader silently closes a quote left open at the end of the file; say where it opened."""
    tail = "".join(io.StringIO(text, newline="").readlines()[last_start - 1 :])
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return  # strict-only complaints about input pandas accepts are not ours to raise
        raise _invalid(
            f"line {last_start} opens a quoted CSV field that is never closed; close the quote or remove it",
            line=last_start,
        ) from None


def _parse_csv(text: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text), low_memory=False)
    except pd.errors.EmptyDataError:
        raise _invalid("the file has no columns; the first line must be a header naming the columns") from None
    except pd.errors.ParserError as exc:
        message = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
        raise _invalid(f"the file is not well-formed CSV: {message}") from None


# --- JSON Lines ----------------------------------------------------------------------------------------


def _parse_jsonl(text: str, max_columns: int | None) -> pd.DataFrame:
    """One flat JSON object per non-blank line; keys become columns (a key missing on a line is empty)."""
    records: list[dict[str, Any]] = []
    columns: dict[str, None] = {}  # insertion-ordered union of the keys
    # Split on newlines only: JSON strings may hold U+2028 and friends, which str.splitlines() would cut at.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _invalid(f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})", line=number) from None
        except ValueError:  # an integer of more than 4,300 digits (Python's int-conversion limit)
            raise _invalid(
                f"line {number} holds a number with more than 4,300 digits; store such values as strings", line=number
            ) from None
        except RecursionError:  # thousands of nested brackets: refused below anyway, but the parser gives up first
            raise _invalid(
                f"line {number} nests arrays or objects too deeply to read; a table cell must be a string, number, "
                "boolean or null",
                line=number,
            ) from None
        if not isinstance(record, dict):
            raise _invalid(
                f"line {number} is a JSON {type(record).__name__}, not an object; each line must be one "
                'object such as {"text": "...", "label": "..."}',
                line=number,
            )
        nested = [key for key, value in record.items() if isinstance(value, dict | list)]
        if nested:
            raise _invalid(
                f"line {number}: key {nested[0]!r} holds a nested object or array; a table cell must be a "
                "string, number, boolean or null (store nested data as a JSON string)",
                line=number,
            )
        for key in record:
            if key not in columns:
                columns[key] = None
                if max_columns is not None:
                    _check_column_count(len(columns), max_columns)
        records.append(record)
    if not records:
        raise _invalid("the file is empty; upload JSON Lines with one object per line")
    _check_columns(list(columns))
    return pd.DataFrame.from_records(records, columns=list(columns))


# --- Parquet -------------------------------------------------------------------------------------------


def _parquet_column_count(content: bytes) -> int:
    """Columns in the file's schema, read from its footer; 0 when the footer is unreadable (the full read
    that follows then reports the corruption)."""
    try:
        return int(pq.ParquetFile(io.BytesIO(content)).metadata.num_columns)
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return 0


def _is_flat(arrow_type: pa.DataType) -> bool:
    """A type a table column can hold: numbers, booleans, strings, dates and times, (string) categoricals."""
    if pa.types.is_dictionary(arrow_type):
        return _is_flat(arrow_type.value_type)
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_temporal(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _check_parquet_types(schema: pa.Schema) -> None:
    nested = [f"{field.name} ({field.type})" for field in schema if not _is_flat(field.type)]
    if nested:
        raise _invalid(
            f"columns of types a table cannot hold: {', '.join(nested)}; store lists, structs, maps and binary "
            "data as separate columns or as strings",
            columns=[field.name for field in schema if not _is_flat(field.type)],
        )


def parquet_failure(exc: BaseException) -> str:
    """Why a Parquet file does not read, in our words by the exception's class: the reader's own text is
    Arrow's (its internals, offsets, at times a file name) and is not passed on."""
    if isinstance(exc, pa.ArrowNotImplementedError):
        return "it uses a feature this server's Parquet reader does not support (a compression codec or type)"
    if isinstance(exc, TypeError):
        return "it holds a column of a type that cannot be read"
    if isinstance(exc, OSError):
        return "it is truncated or its data does not read"
    return "it is not a Parquet file, or it is corrupt or truncated"


def _parse_parquet(content: bytes) -> pd.DataFrame:
    try:
        _check_parquet_types(pq.ParquetFile(io.BytesIO(content)).schema_arrow)
        frame = pd.read_parquet(io.BytesIO(content))
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise _invalid(
            f"the Parquet file cannot be read: {parquet_failure(exc)}; re-export it and upload it again"
        ) from None
    index = frame.index
    default_index = isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0 and index.step == 1
    if not default_index:
        # A saved pandas index (e.g. a named 'id', even one stored as a range) is data the user wants to
        # see as a column.
        clashing = [name for name in frame.index.names if name is not None and name in frame.columns]
        if clashing:
            raise _invalid(
                f"the file's saved index {clashing[0]!r} has the same name as a column; save it with index=False "
                "or rename one of them"
            )
        frame = frame.reset_index()
    return frame


# --- shared checks ----------------------------------------------------------------------------------------


def _check_column_count(count: int, max_columns: int) -> None:
    if count > max_columns:
        raise _invalid(
            f"the file has {count} columns; at most {max_columns} are accepted (MAAS_MAX_COLUMNS): "
            "drop unused columns, or ask the operator to raise the limit",
            columns=count,
            limit=max_columns,
        )


def _check_columns(names: list[str]) -> None:
    empty = [position for position, name in enumerate(names, start=1) if not name.strip()]
    if empty:
        shown = ", ".join(str(position) for position in empty)
        raise _invalid(
            f"the header has empty column names (column {shown}); give every column a name",
            columns=empty,
        )
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        shown = ", ".join(repr(name) for name in duplicates)
        raise _invalid(
            f"the header repeats column names: {shown}; every column needs a distinct name",
            columns=duplicates,
        )


def _check_has_rows(frame: pd.DataFrame) -> None:
    if len(frame.columns) == 0:
        raise _invalid("the file has no columns; the first line must be a header naming the columns")
    if len(frame) == 0:
        raise _invalid("the file has a header but no data rows; add at least one row of data")
