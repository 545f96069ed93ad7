"""The ``maas`` command: ``maas up`` runs the platform; the other commands call it over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from maas.client import Client, MaasAPIError

app = typer.Typer(
    help="MaaS: Model-as-a-Service. `maas up` starts the platform; the rest talk to it.", no_args_is_help=True
)
tenants_app = typer.Typer(help="Tenants (platform admin key).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of your tenant.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Training jobs.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Serving endpoints.", no_args_is_help=True)
for sub, name in (
    (tenants_app, "tenants"),
    (keys_app, "keys"),
    (datasets_app, "datasets"),
    (jobs_app, "jobs"),
    (models_app, "models"),
    (endpoints_app, "endpoints"),
):
    app.add_typer(sub, name=name)

console = Console()
# Errors go to stderr, so `maas ... | jq` sees only results; soft_wrap keeps long messages on one line.
errors = Console(stderr=True, soft_wrap=True)
Url = Annotated[str, typer.Option("--url", envvar="MAAS_URL", help="Server URL")]
Key = Annotated[str, typer.Option("--key", envvar="MAAS_API_KEY", help="API key (Bearer)")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _plain(value: Any) -> str:
    """``value`` as text Rich prints verbatim: messages and descriptions hold brackets ("[height][width]")."""
    return escape(str(value if value is not None else ""))


def _emit(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def _run(url: str, key: str, call: Any) -> None:
    try:
        with Client(url, key) as client:
            result = call(client)
    except MaasAPIError as exc:
        # server text is escaped: Rich would take "[height][width]" in a detail for markup and drop it
        errors.print(f"[red]{exc.status} {_plain(exc.problem.get('title'))}[/]: {_plain(exc.problem.get('detail'))}")
        for error in exc.problem.get("errors", []):
            errors.print(f"  - {_plain('.'.join(map(str, error.get('loc', []))))}: {_plain(error.get('msg'))}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        hint = "(is `maas up` running? is --url / MAAS_URL right?)"
        errors.print(f"[red]cannot reach MaaS at {escape(url)}[/]: {_plain(exc)} {hint}")
        raise typer.Exit(1) from None
    except OSError as exc:
        errors.print(f"[red]{_plain(exc.strerror or exc)}[/]: {_plain(exc.filename or '')}")
        raise typer.Exit(1) from None
    if result is not None:
        _emit(result)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    demo: Annotated[bool, typer.Option("--demo", help="Create a demo tenant, train and deploy a model")] = False,
    home: Annotated[Path | None, typer.Option(help="Data directory (default: $MAAS_HOME or ./.maas)")] = None,
) -> None:
    """Start the platform: API, job dispatcher and serving, with SQLite + local artifacts by default."""
    from pydantic import ValidationError

    from maas.cli.up import serve
    from maas.config import Settings

    try:
        settings = Settings(home=home) if home else Settings()
    except ValidationError as exc:
        # Named by the variable to fix; the values themselves are not echoed (the admin key is one of them).
        for error in exc.errors():
            field = "".join(str(part) for part in error["loc"]).upper()
            where = f"MAAS_{field}: " if field else ""
            errors.print(
                f"[red]configuration error[/]: {_plain(where)}{_plain(error['msg'].removeprefix('Value error, '))}"
            )
        raise typer.Exit(2) from None
    serve(settings, host, port, demo)


@tenants_app.command("create")
def tenants_create(name: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    """Create a tenant; prints its first developer key (shown once)."""
    _run(url, key, lambda c: c.create_tenant(name))


@tenants_app.command("list")
def tenants_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_tenants())


@keys_app.command("create")
def keys_create(
    name: str,
    role: Annotated[str, typer.Option(help="developer or consumer")] = "consumer",
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    _run(url, key, lambda c: c.create_key(name, role))


@keys_app.command("list")
def keys_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_keys())


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.revoke_key(key_id))


@datasets_app.command("upload")
def datasets_upload(
    path: Path,
    name: Annotated[str | None, typer.Option(help="Dataset name")] = None,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Upload a CSV or Parquet file (same name again = new version)."""
    _run(url, key, lambda c: c.upload_dataset(path, name))


@datasets_app.command("list")
def datasets_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_datasets())


@datasets_app.command("show")
def datasets_show(
    dataset_id: str, version: Annotated[int | None, typer.Option()] = None, url: Url = DEFAULT_URL, key: Key = ""
) -> None:
    _run(url, key, lambda c: c.get_dataset_version(dataset_id, version) if version else c.get_dataset(dataset_id))


@datasets_app.command("preview")
def datasets_preview(dataset_id: str, rows: int = 10, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.preview_dataset(dataset_id, rows))


@datasets_app.command("delete")
def datasets_delete(dataset_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.delete_dataset(dataset_id))


def _epoch_line(payload: dict[str, Any]) -> str:
    parts = [f"epoch {payload['epoch']}/{payload['epochs']}", f"loss {payload['train_loss']:.4f}"]
    if payload.get("val_loss") is not None:  # absent when validation_split is 0
        parts.append(f"val_loss {payload['val_loss']:.4f}")
    parts += [f"val_{name} {value:.4f}" for name, value in payload.get("val_metrics", {}).items()]
    parts.append(f"eta {payload.get('eta_seconds', 0):.0f}s")
    return "  ".join(parts)


def _column_roles(pairs: list[str]) -> dict[str, str] | None:
    roles: dict[str, str] = {}
    for pair in pairs:
        role, sep, column = pair.partition("=")
        if not sep or not role or not column:
            raise typer.BadParameter(f"--column takes ROLE=COLUMN (e.g. text=review), got {pair!r}")
        if role in roles and roles[role] != column:  # the last one silently won: say which to keep instead
            raise typer.BadParameter(f"--column {role}= is given twice ({roles[role]!r} and {column!r}); keep one")
        roles[role] = column
    return roles or None


@app.command()
def train(
    dataset_id: str,
    target: Annotated[str | None, typer.Option(help="Column to predict (image datasets: label)")] = None,
    family: Annotated[str, typer.Option(help="Model family (see `maas families`)")] = "tabular-mlp",
    column: Annotated[
        list[str] | None,
        typer.Option(help="ROLE=COLUMN, repeatable: text=review, user=uid, item=movie, rating=stars"),
    ] = None,
    task: Annotated[str | None, typer.Option(help="Override the inferred task")] = None,
    model_name: Annotated[str | None, typer.Option(help="Registry name")] = None,
    params: Annotated[str, typer.Option("--params", help="Hyperparameters as JSON, e.g. '{\"epochs\": 50}'")] = "{}",
    wait: Annotated[bool, typer.Option(help="Follow the job's events until it ends")] = False,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Start a training job."""
    try:
        hyperparameters = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not valid JSON: {exc}") from None
    columns = _column_roles(column or [])

    def call(client: Client) -> Any:
        job = client.train(
            dataset_id,
            target,
            family=family,
            hyperparameters=hyperparameters,
            model_name=model_name,
            columns=columns,
            task=task,
        )
        if not wait:
            return job
        for event in client.stream_job_events(job["id"]):
            payload = event["payload"]
            if event["kind"] == "epoch":
                console.print(_epoch_line(payload))
            elif event["kind"] == "state":
                console.print(f"state: {payload['state']}")
        finished = client.get_job(job["id"])
        if finished["state"] != "succeeded":
            _emit(finished)
            raise typer.Exit(1)  # a job that failed or was cancelled fails the command, so scripts can tell
        return finished

    _run(url, key, call)


def _bounds(schema: dict[str, Any]) -> str:
    marks = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    parts = [f"{mark} {schema[name]}" for name, mark in marks.items() if name in schema]
    choices = schema.get("enum") or [option.get("const") for option in schema.get("anyOf", []) if "const" in option]
    if choices:
        parts.append(" | ".join(map(str, choices)))
    for option in schema.get("anyOf", []):
        if option.get("type") not in (None, "null") or "enum" in option:
            parts.append(_bounds(option) or str(option.get("type", "")))
    return ", ".join(part for part in parts if part)


def _print_family(family: dict[str, Any]) -> None:
    schema = family.get("hyperparameters", {})
    table = Table(
        title=_plain(f"{family['name']}: {family.get('description', '')}"),
        caption=_plain(f"data: {family.get('data', '?')}  tasks: {', '.join(family.get('tasks', []))}"),
        title_justify="left",
    )
    for header in ("hyperparameter", "default", "bounds / choices", "description"):
        table.add_column(header, overflow="fold")
    for name, field in schema.get("properties", {}).items():
        resolved = schema.get("$defs", {}).get(field.get("$ref", "").rsplit("/", 1)[-1], field)
        table.add_row(
            _plain(name),
            _plain(json.dumps(field.get("default"))),
            _plain(_bounds(resolved) or resolved.get("type", "")),
            _plain(field.get("description", "")),
        )
    console.print(table)


@app.command()
def families(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON schemas")] = False,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Model families, their tasks and hyperparameters with defaults and bounds."""

    def call(client: Client) -> Any:
        listed = client.families()
        if as_json:
            return listed
        for family in listed:
            _print_family(family)
        return None

    _run(url, key, call)


@jobs_app.command("list")
def jobs_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_jobs())


@jobs_app.command("show")
def jobs_show(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.get_job(job_id))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.cancel_job(job_id))


@jobs_app.command("events")
def jobs_events(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.job_events(job_id))


@models_app.command("list")
def models_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_models())


@models_app.command("show")
def models_show(
    name: str, version: Annotated[int | None, typer.Option()] = None, url: Url = DEFAULT_URL, key: Key = ""
) -> None:
    _run(url, key, lambda c: c.get_model_version(name, version) if version else c.get_model(name))


@models_app.command("alias")
def models_alias(name: str, alias: str, version: int, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.set_alias(name, alias, version))


@models_app.command("download")
def models_download(name: str, version: int, out: Path, url: Url = DEFAULT_URL, key: Key = "") -> None:
    """Download a version's ONNX file."""
    _run(url, key, lambda c: {"written": str(out), "bytes": out.write_bytes(c.download_model(name, version))})


@endpoints_app.command("create")
def endpoints_create(
    name: str,
    model: Annotated[str, typer.Option(help="Model name")],
    version: Annotated[int | None, typer.Option()] = None,
    alias: Annotated[str | None, typer.Option()] = None,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    _run(url, key, lambda c: c.create_endpoint(name, model, version=version, alias=alias))


@endpoints_app.command("list")
def endpoints_list(url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.list_endpoints())


@endpoints_app.command("switch")
def endpoints_switch(
    name: str,
    version: Annotated[int | None, typer.Option()] = None,
    alias: Annotated[str | None, typer.Option()] = None,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    _run(url, key, lambda c: c.update_endpoint(name, version=version, alias=alias))


@endpoints_app.command("delete")
def endpoints_delete(name: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    _run(url, key, lambda c: c.delete_endpoint(name))


@app.command()
def predict(
    endpoint: str,
    instances: Annotated[str, typer.Argument(help="JSON list of instances, or @file.json")],
    parameters: Annotated[str, typer.Option("--parameters", help="Family options as JSON, e.g. '{\"k\": 5}'")] = "{}",
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Get predictions from an endpoint."""
    try:
        options = json.loads(parameters)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--parameters is not valid JSON: {exc}") from None
    try:
        text = Path(instances[1:]).read_text(encoding="utf-8") if instances.startswith("@") else instances
        rows = json.loads(text)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {instances[1:]}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"instances are not valid JSON: {exc}") from None
    _run(url, key, lambda c: c.predict(endpoint, rows if isinstance(rows, list) else [rows], parameters=options))


@app.command()
def usage(url: Url = DEFAULT_URL, key: Key = "") -> None:
    """Metered usage of your tenant."""
    _run(url, key, lambda c: c.usage())


if __name__ == "__main__":
    app()
