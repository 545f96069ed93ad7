"""The platform admin key: from MAAS_ADMIN_KEY, else ``$MAAS_HOME/admin.key``, else generated once."""

from __future__ import annotations

import os
from pathlib import Path

from maas.auth.secrets import generate_secret


def ensure_admin_key(configured: str | None, path: Path) -> tuple[str, bool]:
    """Return the admin secret and whether it was generated just now (so the caller prints it once)."""
    if configured:
        return configured, False
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    secret = generate_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the secret is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret, True
