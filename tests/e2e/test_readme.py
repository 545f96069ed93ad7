"""The README's Python SDK snippet runs as written (STYLE habit 14: the docs are executable)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.harness import LiveServer, new_tenant

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1, "the README should hold exactly one Python snippet"
    return str(blocks[0])


def _churn_csv(path: Path) -> None:
    """A small table with the columns the snippet names: age, plan, churned."""
    rng = np.random.default_rng(7)
    age = rng.integers(18, 80, size=300)
    plan = rng.choice(["free", "pro", "team"], size=300)
    churned = (age < 30) | (plan == "free")
    pd.DataFrame({"age": age, "plan": plan, "churned": churned}).to_csv(path, index=False)


def test_the_readme_sdk_snippet_runs_against_a_real_server(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_tenant(server, "readme")["key"]
    code = _python_snippet().replace("http://127.0.0.1:8000", server.url).replace('"maas_sk_..."', repr(key))
    _churn_csv(tmp_path / "churn.csv")
    monkeypatch.chdir(tmp_path)
    # Our own README, run as a user would paste it.
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "'predictions': [" in printed and "'version': 1" in printed
