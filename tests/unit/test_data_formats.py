"""Reading uploads: CSV and Parquet, and a clear InvalidInput for each kind of bad file."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maas.data.formats import load_frame, read_table
from maas.errors import InvalidInput


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _error(content: bytes, filename: str = "data.csv") -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        read_table(content, filename)
    assert caught.value.errors and caught.value.errors[0]["loc"] == ["body", "file"]
    return caught.value


def test_reads_csv() -> None:
    frame, fmt = read_table(b"a,b\n1,x\n2,y\n", "data.csv")
    assert fmt == "csv"
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].tolist() == [1, 2]


def test_csv_with_bom_crlf_quotes_and_blank_lines() -> None:
    content = '\ufeffname,note\r\n"Smith, J","said ""hi""\nthen left"\r\n\r\nDoe,ok\r\n'.encode()
    frame, fmt = read_table(content, "upload.txt")
    assert fmt == "csv"
    assert list(frame.columns) == ["name", "note"]
    assert frame["name"].tolist() == ["Smith, J", "Doe"]
    assert frame["note"].iloc[0] == 'said "hi"\nthen left'


def test_filename_is_only_a_hint() -> None:
    frame, fmt = read_table(b"a\n1\n", "../../etc/passwd")
    assert fmt == "csv" and len(frame) == 1


@pytest.mark.parametrize("content", [b"", b"   \n\n", b"\xef\xbb\xbf"])
def test_empty_file(content: bytes) -> None:
    assert "empty" in _error(content).detail


def test_nul_bytes_are_binary() -> None:
    error = _error(b"a,b\n1,\x002\n")
    assert "binary" in error.detail and "NUL" in error.detail and "offset 6" in error.detail


def test_not_utf8() -> None:
    error = _error("a,b\ncafé,1\n".encode("latin-1"))
    assert "UTF-8" in error.detail and "line 2" in error.detail and "0xe9" in error.detail


def test_too_many_fields_names_the_line() -> None:
    error = _error(b"a,b,c\n1,2,3\n4,5,6\n7,8,9,10\n")
    assert "line 4" in error.detail and "4 fields" in error.detail and "header has 3" in error.detail
    assert error.errors[0]["line"] == 4
    assert error.errors[0]["expected"] == 3 and error.errors[0]["found"] == 4


def test_too_few_fields_names_the_line() -> None:
    # pandas would silently pad this row with NaN.
    error = _error(b"a,b,c\n1,2,3\n\n4,5\n")
    assert "line 4" in error.detail and "2 fields" in error.detail


def test_long_first_row_is_not_taken_as_an_index() -> None:
    error = _error(b"a,b\n1,2,3\n")
    assert "line 2" in error.detail


def test_duplicate_columns_are_named() -> None:
    error = _error(b"id,price,price,qty,qty\n1,2,3,4,5\n")
    assert "'price'" in error.detail and "'qty'" in error.detail
    assert error.errors[0]["columns"] == ["price", "qty"]


def test_empty_column_name() -> None:
    error = _error(b"a,,c\n1,2,3\n")
    assert "empty column name" in error.detail and "column 2" in error.detail


def test_header_without_rows() -> None:
    assert "no data rows" in _error(b"a,b,c\n").detail
    assert "no data rows" in _error(b"a,b,c\n\n\n").detail


def test_unterminated_quote() -> None:
    error = _error(b'a,b\n1,"never closed\n2,3\n')
    assert "CSV" in error.detail


def test_parquet_round_trip() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.5, None, 3.0],
            "label": ["a", "b", None],
            "when": pd.to_datetime(pd.Series(["2024-01-01", "2024-02-01", None])),
            "flag": [True, False, True],
        }
    )
    loaded, fmt = read_table(_parquet(frame), "whatever.csv")
    assert fmt == "parquet"
    pd.testing.assert_frame_equal(loaded, frame)
    pd.testing.assert_frame_equal(load_frame(_parquet(frame), "parquet"), frame)


def test_parquet_keeps_a_saved_index_as_a_column() -> None:
    frame = pd.DataFrame({"v": [1, 2]}, index=pd.Index([10, 20], name="id"))
    loaded, _ = read_table(_parquet(frame), "f.parquet")
    assert list(loaded.columns) == ["id", "v"]


def test_corrupt_parquet() -> None:
    content = _parquet(pd.DataFrame({"a": [1, 2, 3]}))
    error = _error(content[: len(content) // 2], "f.parquet")
    assert "Parquet" in error.detail and "corrupt" in error.detail


def test_parquet_named_file_without_magic() -> None:
    error = _error(b"garbage that is not parquet", "data.parquet")
    assert "PAR1" in error.detail


def test_parquet_without_rows() -> None:
    content = _parquet(pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    assert "no data rows" in _error(content, "f.parquet").detail


def test_load_frame_csv_matches_read_table() -> None:
    content = b"a,b,c\n1,x,2024-01-01\n2,,2024-01-02\n"
    frame, fmt = read_table(content, "d.csv")
    pd.testing.assert_frame_equal(load_frame(content, fmt), frame)


def test_load_frame_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_frame(b"a\n1\n", "xlsx")


def test_too_many_columns_is_refused_from_the_header_alone() -> None:
    header = ",".join(f"c{i}" for i in range(50))
    # The rows are ragged too: the column count is reported first, before any row is read.
    content = f"{header}\n1,2\n".encode()
    with pytest.raises(InvalidInput, match=r"50 columns; at most 10 are accepted \(MAAS_MAX_COLUMNS\)"):
        read_table(content, "wide.csv", max_columns=10)


def test_too_many_parquet_columns_is_refused() -> None:
    frame = pd.DataFrame({f"c{i}": [1, 2] for i in range(12)})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    with pytest.raises(InvalidInput, match="12 columns; at most 10"):
        read_table(buffer.getvalue(), "wide.parquet", max_columns=10)
    assert read_table(buffer.getvalue(), "wide.parquet", max_columns=12)[0].shape == (2, 12)


@pytest.mark.parametrize(
    "column",
    [pa.array([[1, 2], [3], [4]]), pa.array([{"x": 1}, {"x": 2}, {"x": 3}]), pa.array([b"a", b"b", b"c"])],
    ids=["list", "struct", "binary"],
)
def test_parquet_columns_a_table_cannot_hold_are_named(column: pa.Array) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"odd": column, "y": [1, 2, 3]}), buffer)
    with pytest.raises(InvalidInput, match=r"cannot hold: odd \("):
        read_table(buffer.getvalue(), "odd.parquet")


def test_parquet_index_named_like_a_column_is_refused() -> None:
    frame = pd.DataFrame({"id": [5, 3], "y": [3, 4]}).set_index("id", drop=False)
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    with pytest.raises(InvalidInput, match="saved index 'id' has the same name as a column"):
        read_table(buffer.getvalue(), "clash.parquet")


def test_parquet_categoricals_and_timestamps_are_accepted() -> None:
    frame = pd.DataFrame(
        {"c": pd.Categorical(["a", "b"]), "t": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True), "y": [1, 2]}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    assert list(read_table(buffer.getvalue(), "ok.parquet")[0].columns) == ["c", "t", "y"]


def test_parquet_named_range_index_is_kept_as_a_column() -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "y": [3, 4, 5]}).set_index("id")  # stored as a named range
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    table = read_table(buffer.getvalue(), "ranged.parquet")[0]
    assert list(table.columns) == ["id", "y"] and table["id"].tolist() == [1, 2, 3]
