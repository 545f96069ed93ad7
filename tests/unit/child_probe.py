"""A child for tests/unit/test_child_process.py: does what its first argument says, then reports."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    action, out = sys.argv[1], Path(sys.argv[2])
    report: dict[str, object] = {"cwd": os.getcwd(), "environment": sorted(os.environ)}
    if action == "allocate":
        blob = bytearray(3 << 30)  # past the limit the test sets: MemoryError, no report
        report["allocated"] = len(blob)
    elif action == "sleep":
        time.sleep(60)
    elif action == "refuse":
        report = {"error": "the model is refused for a reason of its own"}
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
