"""Read an uploaded zip archive in memory, safely: nothing is extracted to disk, ever.

Refused with a 4xx naming the member: names that climb out of the archive (``../``) or are absolute,
symbolic links, encrypted members, duplicate names, unreadable data. Decompression bombs are stopped by
two limits: the member count (read from the end-of-archive record before the directory is parsed, so a
zip of millions of empty entries costs nothing) and the bytes actually decompressed, counted while reading
(the sizes in the headers can lie).
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
import zlib
from typing import Any

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
    at = content.rfind(_EOCD, max(0, len(content) - 65_557))
    if at < 0 or at + 22 > len(content):
        return None
    (count,) = struct.unpack_from("<H", content, at + 10)
    if count != 0xFFFF:
        return int(count)
    locator = at - 20
    if locator < 0 or content[locator : locator + 4] != _ZIP64_LOCATOR:
        return None
    (offset,) = struct.unpack_from("<Q", content, locator + 8)
    if offset + 40 > len(content) or content[offset : offset + 4] != _ZIP64_EOCD:
        return None
    (count64,) = struct.unpack_from("<Q", content, offset + 32)
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


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The member's bytes; raises PayloadTooLarge as soon as more than ``budget`` bytes come out."""
    chunks: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > budget:
                    raise PayloadTooLarge(
                        f"the archive unpacks to more bytes than the limit (reached while reading member "
                        f"'{info.filename}'); split the dataset or raise MAAS_MAX_UNPACKED_BYTES",
                        errors=[{"loc": ["body", "file"], "msg": "unpacked size over the limit"}],
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise _invalid(f"member '{info.filename}' cannot be read: {exc}", info.filename) from None
    return b"".join(chunks)


def read_zip_members(content: bytes, *, max_members: int, max_unpacked_bytes: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file that matters, sorted by name; see the module docstring for what is refused."""
    declared = declared_member_count(content)
    if declared is not None and declared > max_members:
        raise PayloadTooLarge(
            f"the archive has {declared:,} members; at most {max_members:,} are accepted (MAAS_MAX_ARCHIVE_MEMBERS)"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _invalid(f"the file is not a readable zip archive: {exc}") from None
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
        members: list[tuple[str, bytes]] = []
        remaining = max_unpacked_bytes
        for info in sorted(wanted, key=lambda item: item.filename):
            data = _read_member(archive, info, remaining)
            remaining -= len(data)
            members.append((info.filename, data))
    return members
