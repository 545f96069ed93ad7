"""The belt at the one place errors become HTTP: no answer carries a server path or an API key.

Domain code names what went wrong, and a library's message it passes on may name a file where the server
keeps it (``Load model from /tmp/maas-upload-…/model/model.onnx failed``): that tells an attacker the
server's layout. Every text an error answer carries goes through a :class:`Redactor` first, which replaces
absolute paths under the server's own directories (temp dir, ``MAAS_HOME``, working directory, the Python
installation, the user's home) with ``<server path>`` and API keys with ``<secret>``. Paths of the API itself
(``/v1/chat/completions``) lie under none of them and are kept.
"""

from __future__ import annotations

import os
import re
import site
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from maas.auth.secrets import KEY_PREFIX

SERVER_PATH = "<server path>"
SECRET = "<secret>"  # noqa: S105 (what replaces a key, not one)

# What may follow a root inside a path: anything but the whitespace, quotes, brackets and punctuation that
# end a path inside a sentence. A colon ends it too ("…/model.onnx: no such file").
_REST_OF_PATH = r"(?:/[^\s'\"`<>()\[\]{},;:]*)?"
# A root only counts where a path starts ("/var/tmp" does not contain the root "/tmp"); "file://" may precede.
_PATH_START = r"(?<![\w.~-])"
_ROOT_END = r"(?![\w-]|\.[\w.-])"  # "/tmpfoo" and "/tmp.d" are not under "/tmp"; "/tmp." ends a sentence
_KEY = re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]+"
# The API's own namespaces: a server whose working directory is /api must still name /api/v1/... in its errors.
_API_ROOTS = ("/api", "/v1")


def server_roots(home: Path) -> list[str]:
    """The directories whose paths are the server's own business."""
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
    return [str(root) for root in roots]


class Redactor:
    """``redactor(text)``: ``text`` with the paths under ``roots`` and any API key replaced."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        spelled: set[str] = set()
        for root in roots:
            # Both spellings: the one the code used and the real one behind symlinks (/tmp -> /private/tmp).
            for form in (os.path.abspath(root), os.path.realpath(root)):
                trimmed = form.rstrip("/")
                # Never "/" itself: every path is under it, the API's included.
                if len(trimmed) > 1 and not any(_within(trimmed, api) for api in _API_ROOTS):
                    spelled.add(trimmed)
        # Longest first: of two roots where a path starts (a prefix and its site-packages), the more specific.
        alternatives = "|".join(re.escape(root) for root in sorted(spelled, key=len, reverse=True))
        paths = f"{_PATH_START}(?:{alternatives}){_ROOT_END}{_REST_OF_PATH}" if alternatives else None
        self._pattern = re.compile(f"(?P<key>{_KEY})" + (f"|(?P<path>{paths})" if paths else ""))

    @classmethod
    def for_server(cls, home: Path) -> Redactor:
        return cls(server_roots(home))

    def __call__(self, text: str) -> str:
        return self._pattern.sub(_replacement, text)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _replacement(match: re.Match[str]) -> str:
    if match.group("key") is not None:
        return SECRET
    # A sentence's full stop after a path is the sentence's, not the path's.
    found = match.group(0)
    return SERVER_PATH + found[len(found.rstrip(".")) :]
