"""One typed settings object, read once at start-up and passed explicitly (STYLE habit 7).

Every field can be set by an environment variable ``MAAS_<NAME>`` or in ``maas.toml`` in the working
directory. Worker processes receive the settings serialised as JSON, never by re-reading the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The admin key opens every tenant: a guessable one is refused at start-up.
MIN_ADMIN_KEY_LENGTH = 24


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_", toml_file="maas.toml", extra="ignore")

    home: Path = Field(default=Path(".maas"), description="Directory for the SQLite file, artifacts and keys.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in `home`.")
    storage_url: str = Field(default="", description="Artifact store URL (file://…); empty means `home`/artifacts.")
    executor: Literal["local"] = Field(default="local", description="Where training jobs run.")
    environment: Literal["development", "production"] = "development"
    admin_key: str | None = Field(default=None, description="Platform admin key; generated on first start if unset.")
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="Largest dataset upload accepted.")
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest body of any other request (a predict call, say)."
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest request head (request line and headers) accepted; a larger one is refused with 431.",
    )
    max_headers: int = Field(default=100, gt=0, description="Most headers a request may have; more are a 431.")
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest a request head may take to arrive from its first byte; a slower one is a 408.",
    )
    max_columns: int = Field(
        default=2000, gt=0, description="Most columns a dataset may have (profiling costs ~1 ms per column)."
    )
    max_archive_members: int = Field(
        default=100_000, gt=0, description="Most files in an uploaded archive (a zip of images, say)."
    )
    max_unpacked_bytes: int = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description="Most bytes an uploaded archive may unpack to, counted while reading (decompression bombs).",
    )
    max_batch_instances: int = Field(default=1024, gt=0, description="Largest predict batch accepted.")
    artifact_gc_seconds: float = Field(
        default=600.0,
        ge=60,  # must outlast the gap between storing a blob and committing the row that names it
        description="Artifacts no dataset or model names are deleted once idle this long; also how often to look.",
    )
    preview_rows: int = Field(default=20, gt=0, le=1000)
    job_lease_seconds: float = Field(default=30.0, gt=0, description="A worker silent for this long loses its job.")
    job_heartbeat_seconds: float = Field(default=2.0, gt=0)
    dispatcher_poll_seconds: float = Field(default=0.5, gt=0)
    max_concurrent_jobs: int = Field(default=1, gt=0, description="Worker subprocesses run at once.")
    max_active_jobs_per_tenant: int = Field(
        default=20, gt=0, description="Queued plus running jobs one tenant may have; more are refused with 429."
    )
    max_job_attempts: int = Field(default=5, gt=0, description="A job that dies this often is failed for good.")
    auth_cache_ttl_seconds: float = Field(default=2.0, ge=0, description="Key/route cache TTL; bounds revocation lag.")
    batch_max_size: int = Field(default=64, gt=0, description="Adaptive batcher: most requests merged.")
    batch_max_wait_ms: float = Field(default=2.0, ge=0, description="Adaptive batcher: longest wait to fill.")
    shipped_models: str = Field(
        default="all",
        description="Models shipped in installed packages that `maas up` publishes to the platform catalog: "
        "'all', 'none', or a comma-separated list of catalog names (all-minilm-l6-v2, smollm2-135m-instruct).",
    )
    generation_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads of each language model's decode loop; unset: torch's default (one per core).",
    )
    chat_template_budget_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="Longest a tenant's own chat template may take to render one conversation; past it the render "
        "is stopped (its worker process killed) and the request gets a 400 chat_template_timeout.",
    )
    chat_template_workers: int = Field(
        default=2,
        ge=1,
        description="Worker processes rendering tenants' chat templates (a template is a program: it never runs "
        "in the server's process, where it could not be stopped): forks of one ~60 MB process, ~20 MB each.",
    )
    worker_threads: int = Field(default=0, ge=0, description="torch threads per worker; 0 lets torch choose.")

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment == "production" and not self.admin_key:
            raise ValueError("MAAS_ADMIN_KEY must be set when MAAS_ENVIRONMENT=production")
        if self.admin_key is not None and len(self.admin_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"MAAS_ADMIN_KEY is {len(self.admin_key)} characters; use at least {MIN_ADMIN_KEY_LENGTH} "
                "random ones (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'maas.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.home / "artifacts").resolve().as_uri()

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    @property
    def work_dir(self) -> Path:
        """Scratch space of jobs: checkpoints, logs."""
        return self.home / "work"
