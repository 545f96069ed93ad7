"""Check an import's large files in a child process: ``python -m maas.registry.import_file_check REQUEST OUT``.

Parsing a JSON file of tens of megabytes, or loading a tokenizer.json of that size, holds the interpreter for
seconds: in the API process that stalls every request, /healthz too. ``import_files.scan_directory`` hands such
files to this child (run by ``child_process``: time and memory limits, no secrets, its own folder), one child
for all of an import's large files, and raises what it reports as if it had checked them itself: the checks
run here are that module's own (``check_file``, ``check_tokenizer``), so the verdicts and their words are too.

REQUEST is a JSON list of ``{"name", "path", "tokenizer"}``: how the model calls the file, its absolute path,
and whether the tokenizers library must load it as well. ``OUT/report.json`` gets ``files`` and
``tokenizers``, each a map from name to the refusal's message, or null when the file passes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maas.errors import InvalidInput
from maas.registry.child_guard import exit_with_parent, forbid_unpickling
from maas.registry.child_process import REPORT
from maas.registry.import_files import check_file, check_tokenizer


def _verdict(check: Callable[[Path, str], None], path: Path, name: str) -> str | None:
    try:
        check(path, name)
    except InvalidInput as exc:
        return exc.detail
    except MemoryError:
        return f"checking '{name}' needs more memory than an import may use"
    return None


def check_files(request: list[dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    """Each requested file's verdict (a tokenizer is loaded only when its JSON passed: else it is refused)."""
    files: dict[str, str | None] = {}
    tokenizers: dict[str, str | None] = {}
    for entry in request:
        name, path = str(entry["name"]), Path(entry["path"])
        files[name] = _verdict(check_file, path, name)
        if entry["tokenizer"] and files[name] is None:
            tokenizers[name] = _verdict(check_tokenizer, path, name)
    return {"files": files, "tokenizers": tokenizers}


def main(argv: list[str] | None = None) -> int:
    request, out = (Path(arg) for arg in (argv if argv is not None else sys.argv[1:]))
    exit_with_parent()
    forbid_unpickling(without_torch=True)  # json and tokenizers only: torch need not even load here
    report = check_files(json.loads(request.read_text(encoding="utf-8")))
    (out / REPORT).write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
