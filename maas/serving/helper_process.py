"""How the server starts its helper processes (chat template workers, large tokenizers): nothing to leak.

A helper runs what a tenant's model brings (a Jinja template, a tokenizer file). Should that ever escape its
sandbox, it finds no secret in its environment (no ``MAAS_ADMIN_KEY``, no database URL: only what Python
needs to start) and a working directory (``/``) where the server's relative paths (``.maas/admin.key``)
name nothing.
"""

from __future__ import annotations

import os

HELPER_CWD = "/"
_KEPT_ENVIRONMENT = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")


def helper_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env
