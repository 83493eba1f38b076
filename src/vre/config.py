"""Settings, read from ``VRE_*`` environment variables.

These are the server's settings; the client reads ``VRE_URL``, ``VRE_TOKEN`` and
``VRE_BLOCK_SIZE`` itself (see ``vre.client``) so a notebook never loads the server's
configuration. ``docs/settings.md`` lists every setting; it holds ``settings_table()``
verbatim, and a test keeps the two equal.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Server settings: each field is ``VRE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VRE_", extra="ignore")

    # --- where things live ------------------------------------------------------------
    home: Path = Field(
        Path("~/.vre"),
        validate_default=True,
        description="The server's directory (mode 0700): the SQLite database, run"
        " workspaces, the generated root password, the secret key and"
        " rucio-instances.toml live here.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the catalogue, e.g."
        " postgresql+psycopg://user@host/db; unset means SQLite in VRE_HOME (no server"
        " needed, one host only). Removed from the environment of the server and workers"
        " once read: steps never inherit a database password.",
    )
    root_password: str | None = Field(
        None,
        description="Password of the root account created at first start; unset means"
        " one is generated and written to VRE_HOME/root-password (mode 0600). `vre serve`,"
        " `vre worker` and `vre up` remove it from their environment once read.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="The key that seals account secrets and RSE protocol options in the"
        " database: 32 random bytes in URL-safe base64 (python -c 'import secrets;"
        " print(secrets.token_urlsafe(32))'). Unset means VRE_SECRET_KEY_FILE. Removed from"
        " the environment of the server and workers once read.",
    )
    secret_key_file: Path | None = Field(
        None,
        description="A file holding the secret key; unset means VRE_HOME/secret.key, made"
        " (mode 0600) at first start. Servers and workers sharing one database must share"
        " the key: a secret sealed with one does not open with another.",
    )

    # --- logins and tokens ------------------------------------------------------------
    token_max_days: float = Field(
        366.0,
        gt=0,
        description="Longest lifetime of an API token, in days (login tokens included);"
        " a token made with a token never outlives the one that made it.",
    )
    login_failures: int = Field(
        5,
        gt=0,
        description="Failed logins in a row that lock an account name out for"
        " VRE_LOGIN_LOCKOUT seconds; names of no account count the same, so a lock-out"
        " reveals nothing. A successful login clears the count.",
    )
    login_address_failures: int = Field(
        50,
        gt=0,
        description="Failed logins from one client address that lock that address out"
        " for every account name: guessing many accounts' passwords from one place.",
    )
    login_lockout: float = Field(
        60.0,
        gt=0,
        description="Seconds of the first lock-out after too many failed logins; each"
        " further lock-out doubles it, up to VRE_LOGIN_LOCKOUT_MAX. The counts live in"
        " the database, so every server process applies the same ones.",
    )
    login_lockout_max: float = Field(
        3600.0,
        gt=0,
        description="Longest lock-out, in seconds; failed logins older than twice this"
        " are forgotten.",
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

    # --- requests and uploads ---------------------------------------------------------
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send its request headers (from opening,"
        " and from its previous response) before the server closes it.",
    )
    max_connections: int = Field(
        1000,
        ge=0,
        description="Connections and requests one server process serves at once (503"
        " beyond); 0 means no cap.",
    )
    max_connections_per_address: int = Field(
        256,
        gt=0,
        description="Connections one client address may hold open on one server process;"
        " more are closed at once, so one client cannot take them all.",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Addresses of reverse proxies whose X-Forwarded-For is believed"
        " (comma-separated, as uvicorn's --forwarded-allow-ips); empty believes none, so"
        " the address failed logins are counted against is the real peer's.",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may stall before the server answers 408 and"
        " closes the connection; a slow client cannot hold a connection open for ever.",
    )
    body_min_rate: float = Field(
        1024.0,
        ge=0,
        description="Bytes per second a request body must average once VRE_BODY_TIMEOUT"
        " seconds have passed, else 408: one byte every few seconds is not an upload. 0"
        " turns the check off.",
    )
    max_request_body: int = Field(
        64 * MIB,
        gt=0,
        description="Largest request body, in bytes, of every request but file and"
        " workspace uploads (those stream to storage): bounds what one JSON request may"
        " make the server parse.",
    )
    max_uploads: int = Field(
        32,
        gt=0,
        description="Uploads (files and workspace files) one server process receives at"
        " once, for all accounts; beyond it the answer is 503 with Retry-After. Each holds"
        " a thread of its own, never one of the threads that serve other requests.",
    )
    max_uploads_per_account: int = Field(
        4,
        gt=0,
        description="Uploads one account may have in progress at once on one server"
        " process; beyond it the answer is 429 with Retry-After, so one account cannot"
        " take every upload slot.",
    )
    max_specification_size: int = Field(
        MIB,
        gt=0,
        description="Largest reana.yaml a run may be created from, in bytes.",
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
    step_log_limit: int = Field(
        16 * MIB,
        gt=0,
        description="Bytes of each step's log that `vre logs` (GET /runs/RUN/logs) shows;"
        " beyond it the answer is cut with a note, and `vre logs --full` (?full=true)"
        " streams the whole log file, which is always kept.",
    )
    workspace_quota: int = Field(
        10 * 1024 * MIB,
        ge=0,
        description="Bytes on disk all the workspaces of one account may take (0: no"
        " limit); an upload into a workspace beyond it is refused with nothing written,"
        " and a step's command that leaves the workspaces beyond it fails the step.",
    )

    # --- how steps are isolated --------------------------------------------------------
    step_isolation: Literal["sandbox", "unisolated-host"] = Field(
        "sandbox",
        description="sandbox runs every step without an image runtime in a bubblewrap"
        " sandbox (own workspace and inputs only, unprivileged, no network);"
        " unisolated-host runs steps with the worker's own rights and view of the host:"
        " only for a single trusted user.",
    )
    sandbox_executable: str = Field(
        "bwrap", description="The bubblewrap program that builds each step's sandbox."
    )
    sandbox_tmp_size: int = Field(
        256 * MIB,
        gt=0,
        description="Bytes of a step's private /tmp in its sandbox (memory, not disk);"
        " its workspace holds what is bigger.",
    )
    step_processes: int = Field(
        4096,
        ge=0,
        description="Processes a run's step user may have at once (RLIMIT_NPROC, counted"
        " per user: each run has its own, see VRE_STEP_UIDS): a fork bomb stops there;"
        " 0 means no limit.",
    )
    step_user: str = Field(
        "",
        description="One unprivileged user (NAME, UID or UID:GID) every step runs as when"
        " the worker runs as root; empty gives each run a user of its own from VRE_STEP_UIDS.",
    )
    step_uids: str = Field(
        "200000-299999",
        description="User ids (FIRST-LAST, used by nothing else on the host) runs' steps"
        " take one each when the worker runs as root and VRE_STEP_USER is empty.",
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
        """VRE_HOME, made (or narrowed to) 0700: the database, the secret key and the
        workspaces are the server's alone, whatever the umask."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.home.stat()
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            self.home.chmod(0o700)
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
