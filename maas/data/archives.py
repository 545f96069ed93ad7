"""Read an uploaded zip archive safely: members in memory (``read_zip_members``, image datasets) or as a
stream of bounded chunks (``stream_zip_members``, model archives, whose members are written to disk).

Nothing is handed to ``extractall``. Refused with a 4xx naming the member: names that climb out of the
archive (``../``) or are absolute, symbolic links, encrypted members, duplicate names, unreadable data, and
bzip2/LZMA members (Python's zipfile inflates those a whole compressed block at a time: 900 bytes of zip
became 1 GiB in memory before the first chunk came out). Decompression bombs are stopped by two limits:
the member count (read from the end-of-archive record before the directory is parsed, so a zip of millions
of empty entries costs nothing) and the bytes actually decompressed, counted while reading (the sizes in the
headers can lie).
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from maas.errors import InvalidInput, PayloadTooLarge

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})


def _invalid(detail: str, member: str | None = None) -> InvalidInput:
    extra: dict[str, Any] = {"member": member} if member is not None else {}
    return InvalidInput(detail, errors=[{"loc": ["body", "file"], "msg": detail, **extra}])


def declared_member_count(content: bytes) -> int | None:
    """Entries the end-of-central-directory record announces (zip64 aware); None when it is not found."""
    return _declared_member_count_in(io.BytesIO(content))


def _read_at(source: IO[bytes], offset: int, size: int) -> bytes:
    source.seek(offset)
    return source.read(size)


def _declared_member_count_in(source: IO[bytes]) -> int | None:
    """``declared_member_count`` of a seekable file: only the end of the archive is read."""
    length = source.seek(0, os.SEEK_END)
    start = max(0, length - 65_557)
    tail = _read_at(source, start, length - start)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    (count,) = struct.unpack_from("<H", tail, at + 10)
    if count != 0xFFFF:
        return int(count)
    locator = start + at - 20
    record = _read_at(source, locator, 20) if locator >= 0 else b""
    if len(record) < 20 or record[:4] != _ZIP64_LOCATOR:
        return None
    (offset,) = struct.unpack_from("<Q", record, 8)
    end_record = _read_at(source, offset, 40) if offset + 40 <= length else b""
    if len(end_record) < 40 or end_record[:4] != _ZIP64_EOCD:
        return None
    (count64,) = struct.unpack_from("<Q", end_record, 32)
    return int(count64)


def _ignored(name: str) -> bool:
    """Directory entries, macOS resource forks and hidden files (``.DS_Store``) carry no images."""
    parts = name.split("/")
    return (
        name.endswith("/")
        or parts[0] == "__MACOSX"
        or any(part.startswith(".") and part not in (".", "..") for part in parts)
        or parts[-1].lower() in _IGNORED_FILES
    )


def _check_name(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise _invalid(f"member '{name}' has an absolute path; archive members must be relative", name)
    if ".." in parts:
        raise _invalid(f"member '{name}' climbs out of the archive with '..'; it is refused", name)
    if "\\" in name or "\x00" in name:
        raise _invalid(f"member '{name}' has a backslash or NUL in its name; use '/' between folders", name)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _invalid(f"member '{name}' is a symbolic link; links are refused, store the files themselves", name)
    if info.flag_bits & 0x1:
        raise _invalid(f"member '{name}' is encrypted; upload an archive without a password", name)


def _check_compression(info: zipfile.ZipInfo) -> None:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _invalid(
            f"member '{info.filename}' is compressed with a method other than deflate; zip it with deflate "
            "(zip's default) or without compression",
            info.filename,
        )


class _Budget:
    """Bytes an archive may still unpack to, shared by its members and spent as their chunks come out."""

    def __init__(self, left: int) -> None:
        self.left = left


def _member_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """The member's bytes in chunks of at most 1 MiB; PayloadTooLarge as soon as the budget is spent."""
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                budget.left -= len(chunk)
                if budget.left < 0:
                    raise PayloadTooLarge(
                        f"the archive unpacks to more bytes than the limit (reached while reading member "
                        f"'{info.filename}'); split the archive or raise MAAS_MAX_UNPACKED_BYTES",
                        errors=[{"loc": ["body", "file"], "msg": "unpacked size over the limit"}],
                    )
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
        raise _invalid(
            f"member '{info.filename}' cannot be read: its data is corrupt or truncated", info.filename
        ) from None


def read_zip_members(content: bytes, *, max_members: int, max_unpacked_bytes: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file that matters, sorted by name; see the module docstring for what is refused."""
    return [
        (name, b"".join(chunks))
        for name, chunks in stream_zip_members(
            io.BytesIO(content), max_members=max_members, max_unpacked_bytes=max_unpacked_bytes
        )
    ]


def stream_zip_members(
    source: IO[bytes], *, max_members: int, max_unpacked_bytes: int
) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(name, chunks) of every file that matters, sorted by name, from a seekable file; nothing is held whole.

    Each member's chunks must be read (or dropped) before the next member is asked for. The checks and limits
    are ``read_zip_members``'s (see the module docstring); the unpacked bytes are counted as chunks come out.
    """
    declared = _declared_member_count_in(source)
    if declared is not None and declared > max_members:
        raise PayloadTooLarge(
            f"the archive has {declared:,} members; at most {max_members:,} are accepted (MAAS_MAX_ARCHIVE_MEMBERS)"
        )
    source.seek(0)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _invalid("the file is not a readable zip archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise PayloadTooLarge(
                f"the archive has {len(infos):,} members; at most {max_members:,} are accepted "
                "(MAAS_MAX_ARCHIVE_MEMBERS)"
            )
        seen: set[str] = set()
        wanted: list[zipfile.ZipInfo] = []
        for info in infos:
            _check_name(info)
            if _ignored(info.filename):
                continue
            _check_compression(info)
            if info.filename in seen:
                raise _invalid(f"member '{info.filename}' appears twice in the archive", info.filename)
            seen.add(info.filename)
            wanted.append(info)
        declared_bytes = sum(info.file_size for info in wanted)
        if declared_bytes > max_unpacked_bytes:
            raise PayloadTooLarge(
                f"the archive declares {declared_bytes:,} unpacked bytes; at most {max_unpacked_bytes:,} are "
                "accepted (MAAS_MAX_UNPACKED_BYTES)"
            )
        budget = _Budget(max_unpacked_bytes)
        for info in sorted(wanted, key=lambda item: item.filename):
            yield info.filename, _member_chunks(archive, info, budget)
