"""What the CLI prints: server text (details, descriptions) reaches the terminal verbatim."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from rich.console import Console

from maas.cli import main as cli
from maas.client import MaasAPIError
from maas.models.image_cnn import ImageCNNHyperparameters


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> Console:
    console = Console(record=True, width=400, soft_wrap=True)
    monkeypatch.setattr(cli, name, console)
    return console


def test_families_table_keeps_bracketed_text_in_descriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich took "[height, width]" for a markup tag and printed the image_size description without it
    console = _capture(monkeypatch, "console")
    family = {
        "name": "image-cnn",
        "description": "images [class folders]",
        "data": "images",
        "tasks": ["classification"],
        "hyperparameters": ImageCNNHyperparameters.model_json_schema(),
    }
    cli._print_family(family)
    shown = console.export_text()
    assert "[height, width] (or one number for a square)" in shown
    assert "images [class folders]" in shown


def test_error_details_with_brackets_are_printed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = _capture(monkeypatch, "errors")
    detail = "instances[0]: pixel array of shape [2, 2, 5]; expected [height][width] or [height][width][channels]"
    problem: dict[str, Any] = {"title": "Unprocessable", "detail": detail, "errors": [{"loc": ["x"], "msg": "[bold]"}]}

    def fail(_client: Any) -> None:
        raise MaasAPIError(422, problem)

    with pytest.raises(typer.Exit):
        cli._run("http://127.0.0.1:9", "key", fail)
    shown = errors.export_text()
    assert detail in shown and "x: [bold]" in shown


def test_a_column_role_given_twice_is_refused_not_overwritten() -> None:
    assert cli._column_roles(["text=review", "user=uid"]) == {"text": "review", "user": "uid"}
    assert cli._column_roles(["text=review", "text=review"]) == {"text": "review"}
    with pytest.raises(typer.BadParameter, match="given twice"):
        cli._column_roles(["text=review", "text=stars"])
