"""Settings, read from ``VRE_*`` environment variables.

These are the server's settings; the client reads ``VRE_URL`` and ``VRE_TOKEN``
itself (see ``vre.client``) so a notebook never loads the server's configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server settings."""

    model_config = SettingsConfigDict(env_prefix="VRE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".vre")
    database_url: str | None = None
    root_password: str | None = None
    token_lifetime_days: int = 30
    max_meta_key_length: int = 128
    max_meta_value_length: int = 4096
    max_meta_keys: int = 100
    chunk_size: int = 4 * 1024 * 1024
    # Worker tuning (VRE_TRANSFER_THREADS=8 etc.).
    transfer_threads: int = 4
    transfer_batch: int = 200
    transfer_lease: float = 60.0
    reaper_grace: float = 600.0
    upload_grace: float = 3600.0
    worker_interval: float = 2.0
    # Workflow runs.
    step_timeout: float = 24 * 3600.0
    max_runs_per_account: int = 4
    run_threads: int = 4
    run_poll: float = 0.1
    # Steps in containers: VRE_CONTAINER_RUNTIME=podman runs each step in its
    # `environment` image; empty runs steps on the host (the run record says so).
    container_runtime: str = ""
    podman_options: str = "--runtime runc --cgroup-manager cgroupfs --events-backend file"
    container_options: str = "--network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"

    # External Rucio instances runs may stage from and to (see vre.workflows.instances).
    rucio_instances: Path | None = None

    def rucio_instances_file(self) -> Path:
        return self.rucio_instances or self.home / "rucio-instances.toml"

    def resolved_database_url(self) -> str:
        """SQLite under VRE_HOME unless told otherwise: the laptop default needs no server."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'vre.db'}"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache
def get_settings() -> Settings:
    return Settings()
