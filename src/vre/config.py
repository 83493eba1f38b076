"""Settings, read from ``VRE_*`` environment variables.

These are the server's settings; the client reads ``VRE_URL``, ``VRE_TOKEN`` and
``VRE_BLOCK_SIZE`` itself (see ``vre.client``) so a notebook never loads the server's
configuration. ``docs/settings.md`` lists every setting; it holds ``settings_table()``
verbatim, and a test keeps the two equal.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Server settings: each field is ``VRE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VRE_", extra="ignore")

    # --- where things live ------------------------------------------------------------
    home: Path = Field(
        Path("~/.vre"),
        validate_default=True,
        description="The server's directory: the SQLite database, run workspaces, the"
        " generated root password and rucio-instances.toml live here.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the catalogue, e.g."
        " postgresql+psycopg://user@host/db; unset means SQLite in VRE_HOME (no server"
        " needed, one host only).",
    )
    root_password: str | None = Field(
        None,
        description="Password of the root account created at first start; unset means"
        " one is generated and written to VRE_HOME/root-password (mode 0600).",
    )

    # --- metadata limits ----------------------------------------------------------------
    max_meta_key_length: int = Field(
        128,
        gt=0,
        le=128,
        description="Longest metadata key, in characters; at most 128, the width of the"
        " database column. Lower it to keep keys short.",
    )
    max_meta_value_length: int = Field(
        4096,
        gt=0,
        description="Longest metadata value, in characters (a number counts as its JSON"
        " text): metadata is for describing files, not for storing data in the catalogue.",
    )
    max_meta_keys: int = Field(
        100,
        gt=0,
        description="Most metadata keys one DID may hold: bounds the rows a single"
        " DID adds to the metadata table.",
    )

    # --- bytes ------------------------------------------------------------------------
    block_size: int = Field(
        4 * MIB,
        gt=0,
        description="Bytes per block when streaming files (uploads, downloads, transfers,"
        " stage-in and stage-out); each stream holds a few blocks in memory. Raise it for"
        " fast, high-latency storage, lower it when many streams share little memory.",
    )

    # --- the worker: transfers and deletion -------------------------------------------
    transfer_threads: int = Field(
        4,
        gt=0,
        description="Transfers one worker copies at once. Raise it when storage is fast"
        " and far away (latency-bound), lower it to spare a busy storage element.",
    )
    transfer_batch: int = Field(
        200,
        gt=0,
        description="Transfers a worker claims in one go: bigger batches mean fewer"
        " catalogue round trips, smaller ones share work fairly between workers.",
    )
    transfer_lease: float = Field(
        60.0,
        gt=0,
        description="Seconds a claimed transfer stays a worker's without a heartbeat"
        " (renewed every third of it); a killed worker's transfers are taken over after"
        " this long.",
    )
    transfer_attempts: int = Field(
        5,
        gt=0,
        description="Attempts at one transfer before it fails for good and its locks are stuck.",
    )
    transfer_backoff: float = Field(
        2.0,
        ge=0,
        description="Seconds to wait before a failed transfer's second attempt, doubled"
        " for each attempt after that; raise it when storage outages last long.",
    )
    reaper_grace: float = Field(
        600.0,
        ge=0,
        description="Seconds a replica no rule needs any more stays on storage before the"
        " reaper deletes it: time to undo a removed rule cheaply.",
    )
    reaper_retry: float = Field(
        600.0,
        gt=0,
        description="Seconds after which a deletion the reaper began but did not finish (its"
        " storage failed, or the worker died) is taken up again by any worker.",
    )
    upload_grace: float = Field(
        3600.0,
        ge=0,
        description="Seconds after which an upload that never finished counts as"
        " abandoned and its partial bytes are removed; keep it above the longest upload.",
    )
    worker_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds a worker sleeps between rounds when it found nothing to do:"
        " lower means quicker reactions, higher means fewer idle queries.",
    )

    # --- workflow runs ----------------------------------------------------------------
    step_timeout: float = Field(
        24 * 3600.0,
        gt=0,
        description="Seconds a workflow step may run when its specification sets no"
        " kubernetes_job_timeout.",
    )
    max_runs_per_account: int = Field(
        4,
        gt=0,
        description="Runs of one account executing at once; the others wait in the queue,"
        " so one account cannot take every worker.",
    )
    run_threads: int = Field(
        4,
        gt=0,
        description="Runs one worker executes at once.",
    )
    run_poll: float = Field(
        0.1,
        gt=0,
        description="Seconds between a worker's looks for queued runs while it has room for more.",
    )
    run_lease: float = Field(
        300.0,
        gt=0,
        description="Seconds a run stays its worker's without a renewal; a killed"
        " worker's run is taken over after this long.",
    )

    # --- steps in containers ----------------------------------------------------------
    container_runtime: str = Field(
        "",
        description="podman runs each step in its environment image; empty runs steps"
        " on the host (the run record says so).",
    )
    podman_options: str = Field(
        "--runtime runc --cgroup-manager cgroupfs --events-backend file",
        description="Options before every podman command (global options): how podman"
        " itself runs on this host.",
    )
    container_options: str = Field(
        "--network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768",
        description="Options of every step's podman run: what a step may do (network, limits).",
    )
    image_pull_timeout: float = Field(
        900.0,
        gt=0,
        description="Seconds a pull of a step's image may take before the run fails;"
        " raise it for big images behind slow links.",
    )
    podman_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds one podman housekeeping command (image inspect, ps, rm)"
        " may take before it counts as failed.",
    )

    # --- external Rucio instances -----------------------------------------------------
    rucio_instances: Path | None = Field(
        None,
        description="The TOML file naming the external Rucio instances runs may stage"
        " from and to; unset means VRE_HOME/rucio-instances.toml.",
    )
    rucio_call_timeout: float = Field(
        3600.0,
        gt=0,
        description="Seconds one call to an external Rucio instance (a download, a"
        " listing or an upload) may take; raise it for very large inputs.",
    )

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        """``~`` means the home directory, also when written in VRE_HOME."""
        return value.expanduser()

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


def _shown(value: Any) -> str:
    """A default as the environment variable would spell it."""
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    return f"`{value}`"


def settings_table() -> str:
    """The markdown table of every setting, as ``docs/settings.md`` holds it."""
    lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `VRE_{name.upper()}` | {_shown(info.default)} | {description} |")
    return "\n".join(lines) + "\n"
