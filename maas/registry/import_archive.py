"""Unpack an uploaded model archive (zip or tar, optionally gzip/bz2/xz) into a fresh directory, safely.

Nothing is handed to ``extractall``: every member is checked first and written by us. Refused with a 4xx
naming the member: absolute names, names that climb out with ``..``, links (symbolic or hard), devices and
FIFOs, sparse files, duplicate names. Nothing is inflated in memory: the upload is read from its (spooled)
file and each member is copied to disk in chunks of 1 MiB. Decompression bombs meet two limits, counted as
bytes arrive and never trusted from the headers alone: the number of members and the bytes unpacked (a tar
member whose header announces more than the limit is refused before a byte of it is read). Tar headers that
Python's tarfile reads whole into memory (GNU long names, pax headers) are bounded before it reads them. A
single top-level folder ('my-model/config.json') is stripped, so an archive of the folder and an archive of
its contents import the same.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from maas.data.archives import stream_zip_members
from maas.errors import PayloadTooLarge
from maas.registry.import_files import refused

_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
# Long names and pax records are a few hundred bytes; tarfile reads such a header block whole.
_MAX_HEADER_BYTES = 1 << 20
_WHOLE_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_TAR_READ_ERRORS = (tarfile.TarError, zlib.error, EOFError, OSError, ValueError)


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


class _Unpacker:
    """Writes members under ``root`` as their chunks arrive, counting members and bytes against the limits."""

    def __init__(self, root: Path, *, max_members: int, max_unpacked_bytes: int) -> None:
        self.root = root.resolve()
        self.max_members = max_members
        self.max_unpacked_bytes = max_unpacked_bytes
        self.members = 0
        self.unpacked = 0
        self.written: set[str] = set()

    def count(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise _too_many(self.members, self.max_members)

    def announce(self, name: str, size: int) -> None:
        """A member's size as its header gives it: past the limit, refused before anything is read."""
        if self.unpacked + size > self.max_unpacked_bytes:
            raise _too_big(name, self.max_unpacked_bytes)

    def write(self, name: str, chunks: Iterator[bytes]) -> None:
        clean = _check_member_name(name)
        if not clean:
            return
        if clean in self.written:
            raise refused(f"member '{clean}' appears twice in the archive", clean)
        self.written.add(clean)
        path = (self.root / clean).resolve()
        if self.root not in path.parents:  # belt and braces: the name checks above already refuse this
            raise refused(f"member '{clean}' would be written outside the archive's folder", clean)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as handle:
                for chunk in chunks:
                    self.unpacked += len(chunk)
                    if self.unpacked > self.max_unpacked_bytes:
                        raise _too_big(clean, self.max_unpacked_bytes)
                    handle.write(chunk)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise refused(f"member '{clean}' clashes with another member of the same name or folder", clean) from None


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's own extension point (``_proc_member``): headers it would read whole are bounded first."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise refused(f"member '{self.name}' is a sparse file; it is refused", self.name)
        if self.type in _WHOLE_HEADERS and self.size > _MAX_HEADER_BYTES:
            raise PayloadTooLarge(
                f"the archive has an extended header of {self.size:,} bytes; at most {_MAX_HEADER_BYTES:,} are read"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]  # private in typeshed, public in tarfile's docs

    def _proc_gnusparse_10(self, next: Any, pax_headers: Any, tarfile_: Any) -> None:
        raise refused(f"member '{next.name}' is a sparse file; it is refused", next.name)


def _tar_chunks(archive: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> Iterator[bytes]:
    stream = archive.extractfile(info)
    if stream is None:
        raise refused(f"member '{name}' cannot be read", name)
    try:
        while chunk := stream.read(_CHUNK):
            yield chunk
    except _TAR_READ_ERRORS:
        raise refused(f"member '{name}' cannot be read: the archive is truncated or corrupt", name) from None


def _next_member(archive: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        return archive.next()
    except _TAR_READ_ERRORS:
        raise refused("the file is not a readable zip or tar archive (or it is truncated or corrupt)") from None


def _unpack_tar(source: IO[bytes], unpacker: _Unpacker) -> None:
    try:
        archive = tarfile.open(fileobj=source, mode="r:*", tarinfo=_BoundedTarInfo)  # noqa: SIM115 - `with` below
    except _TAR_READ_ERRORS:
        raise refused("the file is not a readable zip or tar archive") from None
    with archive:
        # ``next()`` reads one header at a time: a tar of millions of empty entries is stopped at the limit
        # instead of being listed first.
        while (info := _next_member(archive)) is not None:
            unpacker.count()
            name = info.name
            if info.issym() or info.islnk():
                raise refused(f"member '{name}' is a link; links are refused, store the files themselves", name)
            if info.isdir():
                _check_member_name(name)
                continue
            if not info.isfile():
                raise refused(f"member '{name}' is not a regular file (device, FIFO…); it is refused", name)
            unpacker.announce(name, info.size)
            unpacker.write(name, _tar_chunks(archive, info, name))


def _unpack_zip(source: IO[bytes], unpacker: _Unpacker) -> None:
    # The shared zip reader refuses absolute names, '..', links, encryption, bzip2/LZMA and bombs; directory
    # entries and hidden files ('.gitattributes', '__MACOSX/') are left out by it.
    limits = {"max_members": unpacker.max_members, "max_unpacked_bytes": unpacker.max_unpacked_bytes}
    for name, chunks in stream_zip_members(source, **limits):
        unpacker.write(name, chunks)


def _single_folder(target: Path) -> Path:
    """The archive's one top-level folder when it holds nothing else, else ``target`` itself."""
    entries = list(target.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def unpack_archive(source: IO[bytes], target: Path, *, max_members: int, max_unpacked_bytes: int) -> Path:
    """Write the archive's files under ``target`` (an empty directory we own); returns the model's folder.

    ``source`` is a seekable file (an upload spooled to disk, never read whole). The folder is ``target``, or
    the archive's single top-level folder inside it.
    """
    unpacker = _Unpacker(target, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes)
    source.seek(0)
    is_zip = zipfile.is_zipfile(source)
    source.seek(0)
    if is_zip:
        _unpack_zip(source, unpacker)
    else:
        _unpack_tar(source, unpacker)
    if not unpacker.written:
        raise refused("the archive holds no files")
    return _single_folder(target)
