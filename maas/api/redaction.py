"""The belt at the one place errors become HTTP: no answer carries a server path, a credential or an API key.

Domain code names what went wrong, and a library's message it passes on may name a file where the server
keeps it (``Load model from /tmp/maas-upload-…/model/model.onnx failed``): that tells an attacker the
server's layout. Every text an error answer carries goes through a :class:`Redactor` first: the scrubbing of
:mod:`maas.redaction` (server paths, URL credentials, the admin key) plus tenants' API keys (``maas_sk_…``).
``Redactor.for_settings`` also hides every directory the settings name (``MAAS_HOME``, a ``file://`` artifact
store, a SQLite database's folder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from maas import redaction
from maas.auth.secrets import KEY_PREFIX
from maas.redaction import SECRET, SERVER_PATH, server_roots

__all__ = ["KEY_PATTERN", "SECRET", "SERVER_PATH", "Redactor", "server_roots"]

KEY_PATTERN = re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]+"


class Redactor(redaction.Redactor):
    """``redactor(text)``: ``text`` with the paths under ``roots``, URL credentials, ``secrets`` and any API
    key replaced."""

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        *,
        secrets: Iterable[str | None] = (),
        secret_patterns: Iterable[str] = (),
    ) -> None:
        super().__init__(roots, secrets=secrets, secret_patterns=[KEY_PATTERN, *secret_patterns])

    @classmethod
    def for_server(cls, home: Path) -> Redactor:
        """The server's usual directories around ``home``; :meth:`for_settings` adds what the settings name."""
        return cls(server_roots(home))
