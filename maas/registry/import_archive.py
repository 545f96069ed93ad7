"""Unpack an uploaded model archive (zip or tar, optionally gzip/bz2/xz) into a fresh directory, safely.

Nothing is handed to ``extractall``: every member is checked first and written by us. Refused with a 4xx
naming the member: absolute names, names that climb out with ``..``, links (symbolic or hard), devices and
FIFOs, duplicate names. Decompression bombs meet two limits counted while reading, never trusted from the
headers: the number of members and the bytes unpacked. A single top-level folder ('my-model/config.json')
is stripped, so an archive of the folder and an archive of its contents import the same.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
import zlib
from pathlib import Path

from maas.data.archives import read_zip_members
from maas.errors import PayloadTooLarge
from maas.registry.import_files import refused

_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20


def _check_member_name(name: str) -> str:
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise refused(f"member '{name}' has an absolute path; archive members must be relative", name)
    if ".." in parts:
        raise refused(f"member '{name}' climbs out of the archive with '..'; it is refused", name)
    if "\\" in name or "\x00" in name:
        raise refused(f"member '{name}' has a backslash or NUL in its name; use '/' between folders", name)
    return "/".join(part for part in parts if part not in ("", "."))


def _too_many(count: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive has more than {limit:,} members ({count:,} read so far); MAAS_MAX_ARCHIVE_MEMBERS bounds it"
    )


def _too_big(name: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive unpacks to more than {limit:,} bytes (reached while reading member '{name}'); "
        "MAAS_MAX_UNPACKED_BYTES bounds it"
    )


def _read_tar(content: bytes, *, max_members: int, max_unpacked_bytes: int) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = []
    total = 0
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as archive:
            # ``next()`` reads one header at a time: a tar of millions of empty entries is stopped at the limit
            # instead of being listed first.
            while (info := archive.next()) is not None:
                count += 1
                if count > max_members:
                    raise _too_many(count, max_members)
                name = info.name
                if info.issym() or info.islnk():
                    raise refused(f"member '{name}' is a link; links are refused, store the files themselves", name)
                if info.isdir():
                    _check_member_name(name)
                    continue
                if not info.isfile():
                    raise refused(f"member '{name}' is not a regular file (device, FIFO…); it is refused", name)
                clean = _check_member_name(name)
                stream = archive.extractfile(info)
                if stream is None:
                    raise refused(f"member '{name}' cannot be read", name)
                chunks: list[bytes] = []
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > max_unpacked_bytes:
                        raise _too_big(name, max_unpacked_bytes)
                    chunks.append(chunk)
                members.append((clean, b"".join(chunks)))
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as exc:
        raise refused(f"the file is not a readable tar archive: {exc}") from None
    return members


def _read_zip(content: bytes, *, max_members: int, max_unpacked_bytes: int) -> list[tuple[str, bytes]]:
    # The image-dataset reader already refuses absolute names, '..', links, encryption and bombs; directory
    # entries and hidden files ('.gitattributes', '__MACOSX/') are left out by it.
    return [
        (_check_member_name(name), data)
        for name, data in read_zip_members(content, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes)
    ]


def _strip_single_folder(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    tops = {name.split("/", 1)[0] for name, _ in members}
    if len(tops) == 1 and all("/" in name for name, _ in members):
        return [(name.split("/", 1)[1], data) for name, data in members]
    return members


def unpack_archive(content: bytes, target: Path, *, max_members: int, max_unpacked_bytes: int) -> list[str]:
    """Write the archive's files under ``target`` (an empty directory we own); returns their relative names."""
    if zipfile.is_zipfile(io.BytesIO(content)):
        members = _read_zip(content, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes)
    else:
        members = _read_tar(content, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes)
    members = _strip_single_folder([(name, data) for name, data in members if name])
    if not members:
        raise refused("the archive holds no files")
    seen: set[str] = set()
    root = target.resolve()
    for name, data in members:
        if name in seen:
            raise refused(f"member '{name}' appears twice in the archive", name)
        seen.add(name)
        path = (root / name).resolve()
        if root not in path.parents:  # belt and braces: the name checks above already refuse this
            raise refused(f"member '{name}' would be written outside the archive's folder", name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as handle:
                handle.write(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise refused(f"member '{name}' clashes with another member of the same name or folder", name) from None
    return sorted(seen)
