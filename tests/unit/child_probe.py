"""A child for tests/unit/test_child_process.py: does what its first argument says, then reports.

``python -m tests.unit.child_probe ACTION [N] OUT``: ``sleep N`` sleeps N seconds (60 without N), ``write N``
writes a file of N bytes, ``spawn`` starts a grandchild that sleeps (its pid in OUT/grandchild.pid) and
sleeps itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    action, extra, out = sys.argv[1], sys.argv[2:-1], Path(sys.argv[-1])
    report: dict[str, object] = {"cwd": os.getcwd(), "environment": sorted(os.environ)}
    if action == "allocate":
        blob = bytearray(3 << 30)  # past the limit the test sets: MemoryError, no report
        report["allocated"] = len(blob)
    elif action == "sleep":
        time.sleep(float(extra[0]) if extra else 60)
    elif action == "write":
        (out / "written.bin").write_bytes(bytes(int(extra[0])))
    elif action == "spawn":
        grandchild = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (out / "grandchild.pid").write_text(str(grandchild.pid), encoding="utf-8")
        time.sleep(60)
    elif action == "refuse":
        report = {"error": "the model is refused for a reason of its own"}
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
