"""Scrub a text of what is the server's own business: its paths, credentials in URLs, and secrets.

A library's message passed on to a user may name a file where the server keeps it (``Load model from
/tmp/maas-upload-…/model/model.onnx failed``) or a database URL with its password: that tells an attacker the
server's layout or hands them a secret. A :class:`Redactor` replaces absolute paths under the server's own
directories (temp dir, ``MAAS_HOME``, the artifact store, the SQLite file's folder, working directory, the Python
installation, the user's home) with ``<server path>``, a URL's ``user:password@`` with ``<secret>@``, and any
given secret (an API key's pattern, the admin key) with ``<secret>``. Paths of the API itself
(``/v1/chat/completions``) lie under none of them and are kept.

Pure text work with no import of the rest of MaaS, so every layer may use it: the HTTP layer on every error
answer (:mod:`maas.api.redaction`), the job worker on the failure reasons it stores.
"""

from __future__ import annotations

import os
import re
import site
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, Self
from urllib.parse import unquote, urlsplit

SERVER_PATH = "<server path>"
SECRET = "<secret>"  # noqa: S105 (what replaces a secret, not one)

# What may follow a root inside a path: anything but the whitespace, quotes, brackets and punctuation that
# end a path inside a sentence. A colon ends it too ("…/model.onnx: no such file").
_REST_OF_PATH = r"(?:/[^\s'\"`<>()\[\]{},;:]*)?"
# A root only counts where a path starts ("/var/tmp" does not contain the root "/tmp"); "file://" may precede.
_PATH_START = r"(?<![\w.~-])"
_ROOT_END = r"(?![\w-]|\.[\w.-])"  # "/tmpfoo" and "/tmp.d" are not under "/tmp"; "/tmp." ends a sentence
# The user information of a URL (``postgresql+psycopg://maas:pw@db``): a user name, and a password that may hold
# a slash left unescaped (an S3 secret), up to "@". No password, no slash: ``https://host/a@b`` is no credential.
_URL_CREDENTIALS = r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@:'\"`<>]+(?::[^\s@'\"`<>]*)?)@"
# The API's own namespaces: a server whose working directory is /api must still name /api/v1/... in its errors.
_API_ROOTS = ("/api", "/v1")


class ServerSettings(Protocol):
    """What a redactor takes from :class:`maas.config.Settings` (named structurally: this module imports none
    of MaaS, so that every layer may use it)."""

    @property
    def home(self) -> Path: ...
    @property
    def admin_key(self) -> str | None: ...
    @property
    def resolved_database_url(self) -> str: ...
    @property
    def resolved_storage_url(self) -> str: ...


def server_roots(home: Path, *, urls: Iterable[str] = ()) -> list[str]:
    """The directories whose paths are the server's own business: the usual ones, plus the folder each of
    ``urls`` names (a ``file://`` artifact store, the folder of a ``sqlite:///`` database file)."""
    roots: list[str | Path] = [
        tempfile.gettempdir(),
        home,
        Path.cwd(),
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        *site.getsitepackages(),
        site.getusersitepackages(),
        Path.home(),
    ]
    roots += [directory for url in urls if (directory := url_directory(url)) is not None]
    return [str(root) for root in roots]


def url_directory(url: str) -> str | None:
    """The local folder a setting's URL names: a ``file://`` URL's path, a SQLite database file's folder; None
    for a URL of another server (``postgresql://…``, ``s3://…``), an in-memory database or an empty setting."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "file" and parts.path:
        return unquote(parts.path)
    if scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        # sqlite:///relative.db and sqlite:////absolute.db: the path after the third slash.
        path = Path(unquote(parts.path)[1:])
        return str(path.resolve().parent)
    return None


class Redactor:
    """``redactor(text)``: ``text`` with the paths under ``roots``, URL credentials and secrets replaced.

    ``secrets`` are literal texts (the admin key), ``secret_patterns`` regular expressions (an API key's)."""

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        *,
        secrets: Iterable[str | None] = (),
        secret_patterns: Iterable[str] = (),
    ) -> None:
        spelled: set[str] = set()
        for root in roots:
            # Both spellings: the one the code used and the real one behind symlinks (/tmp -> /private/tmp).
            for form in (os.path.abspath(root), os.path.realpath(root)):
                trimmed = form.rstrip("/")
                # Never "/" itself: every path is under it, the API's included.
                if len(trimmed) > 1 and not any(_within(trimmed, api) for api in _API_ROOTS):
                    spelled.add(trimmed)
        hidden = [*secret_patterns, *(re.escape(secret) for secret in secrets if secret)]
        alternatives = [_URL_CREDENTIALS]
        if hidden:
            alternatives.append(f"(?P<secret>{'|'.join(hidden)})")
        if spelled:
            # Longest first: of two roots where a path starts (a prefix and its site-packages), the more specific.
            names = "|".join(re.escape(root) for root in sorted(spelled, key=len, reverse=True))
            alternatives.append(f"(?P<path>{_PATH_START}(?:{names}){_ROOT_END}{_REST_OF_PATH})")
        self._pattern = re.compile("|".join(alternatives))

    @classmethod
    def for_settings(cls, settings: ServerSettings) -> Self:
        """Every directory and secret the settings name: the home, the artifact store's folder (``file://``),
        the SQLite database's folder, and the admin key."""
        urls = (settings.resolved_database_url, settings.resolved_storage_url)
        return cls(server_roots(settings.home, urls=urls), secrets=[settings.admin_key])

    def __call__(self, text: str) -> str:
        return self._pattern.sub(_replacement, text)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _replacement(match: re.Match[str]) -> str:
    if match.group("scheme") is not None:
        return f"{match.group('scheme')}{SECRET}@"
    if match.lastgroup == "secret":
        return SECRET
    # A sentence's full stop after a path is the sentence's, not the path's.
    found = match.group(0)
    return SERVER_PATH + found[len(found.rstrip(".")) :]
