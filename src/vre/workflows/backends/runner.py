"""Where a step's commands run: on the host, or in the step's environment image.

The engine asks a runner to ``prepare`` each step (which pins the image it will use
and says what to record) and then to ``run`` each command; both runners share the
local backend's process handling (logs, masking, timeout, stop).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vre.config import Settings
from vre.errors import Invalid
from vre.workflows.backends import local, sandbox
from vre.workflows.backends.container import (
    DEPLOYMENT,
    WORKER,
    Podman,
    container_name,
    input_binds,
)

HOST = "host"
SANDBOX_NOTE = (
    "steps ran in the host environment, each in a sandbox of its own (bubblewrap: its"
    " workspace and inputs only, an unprivileged user, no network); no container runtime"
    " is configured (each step's environment is recorded)"
)
HOST_NOTE = (
    "steps ran UNISOLATED in the host environment with the worker's rights"
    " (VRE_STEP_ISOLATION=unisolated-host; each step's environment is recorded)"
)
SUPPORTED = ("podman",)
SECRET_FILES = "files"  # under StepEnvironment.private; the only part a container sees
# What podman itself may take from the worker's environment: never anything a user sets.
PODMAN_ENVIRONMENT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "REGISTRY_AUTH_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)


@dataclass
class StepEnvironment:
    """What every command of a run sees, whatever it runs in."""

    workspace: Path
    variables: dict[str, str]  # HOME, REANA_WORKSPACE, VRE_RUN, file secrets' paths
    secrets: dict[str, str]  # secret environment variables: never on a command line
    private: Path  # the directory holding file secrets, outside the workspace
    links: list[tuple[str, str, bool]] = field(default_factory=list)  # stage-in links
    worker: str = ""  # the worker executing the run (labels its containers)
    run_id: int = 0  # picks the run's own step user


@dataclass
class Launch:
    """How one command's process starts: its environment, argv (None: plain bash) and
    what removes what it leaves after a stop or timeout."""

    env: dict[str, str]
    argv: list[str] | None = None
    on_kill: Callable[[], None] | None = None


class _Runner:
    note: str

    def __init__(self, environment: StepEnvironment) -> None:
        self.environment = environment

    def prepare(self, image: str | None) -> str:
        """Pin what the step runs in; returns what the step records."""
        raise NotImplementedError

    def launch(self, command: str, name: str) -> Launch:
        raise NotImplementedError

    def run(
        self,
        command: str,
        *,
        log: Path,
        timeout: float,
        should_stop: Callable[[], bool],
        hidden: list[str],
        name: str,
    ) -> local.Outcome:
        how = self.launch(command, name)
        return local.run_command(
            command,
            cwd=self.environment.workspace,
            log=log,
            env=how.env,
            timeout=timeout,
            should_stop=should_stop,
            secrets=hidden,
            argv=how.argv,
            on_kill=how.on_kill,
        )


def _host_environment(environment: StepEnvironment) -> dict[str, str]:
    base = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    # The platform's own interpreter first: `python` in a step finds what the VRE runs on.
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    return {**base, **environment.variables, **environment.secrets}


class SandboxRunner(_Runner):
    """The default: each command in a bubblewrap sandbox (see ``sandbox``)."""

    note = SANDBOX_NOTE

    def __init__(self, environment: StepEnvironment, settings: Settings) -> None:
        super().__init__(environment)
        user = sandbox.step_user(settings.step_user, settings.step_uids, environment.run_id)
        # Each staged file on its own: the step's user reads files (stored 0444), and the
        # directories above them on the RSE are the operator's to open or not.
        read_only = sorted({Path(target) for _, target, _ in environment.links})
        files = environment.private / SECRET_FILES
        if files.is_dir():
            read_only.append(files)
            sandbox.hand_over(files, user)
        sandbox.hand_over(environment.workspace, user)
        self.sandbox = sandbox.Sandbox(
            sandbox.executable(settings.sandbox_executable),
            environment.workspace,
            read_only,
            user,
            settings.sandbox_tmp_size,
            settings.step_processes,
            settings.workspace_quota,
        )
        self.env = _host_environment(environment)

    def prepare(self, image: str | None) -> str:
        return HOST

    def launch(self, command: str, name: str) -> Launch:
        return Launch(self.env, self.sandbox.argv(command))


class HostRunner(_Runner):
    """Unisolated: a step has the worker's rights and view of the host. Only an operator's
    explicit choice (``VRE_STEP_ISOLATION=unisolated-host``) for a single trusted user."""

    note = HOST_NOTE

    def __init__(self, environment: StepEnvironment) -> None:
        super().__init__(environment)
        self.env = _host_environment(environment)
        # A link into a replica would let a step with the worker's rights rewrite it.
        copy_inputs(environment)

    def prepare(self, image: str | None) -> str:
        return HOST

    def launch(self, command: str, name: str) -> Launch:
        return Launch(self.env)


class ContainerRunner(_Runner):
    note = (
        "steps ran in podman containers of their environment images"
        " (each step records the image ID)"
    )

    def __init__(
        self, environment: StepEnvironment, podman: Podman, labels: dict[str, str]
    ) -> None:
        super().__init__(environment)
        self.podman, self.labels = podman, labels
        self.image: str | None = None
        self.binds = input_binds(environment.links)
        files = environment.private / SECRET_FILES
        if files.is_dir():
            self.binds.append(files)
            sandbox.hand_over(files, podman.user)
        sandbox.hand_over(environment.workspace, podman.user)
        # Podman runs on the host with the worker's rights: its environment is the
        # operator's, never a user's (a secret named CONTAINERS_CONF or LD_PRELOAD would
        # reconfigure it). Secrets reach the container through an env file only.
        self.process_env = {k: os.environ[k] for k in PODMAN_ENVIRONMENT if k in os.environ}
        self.env_file = _write_env_file(environment)

    def prepare(self, image: str | None) -> str:
        if not image:
            raise Invalid("a step without an environment image cannot run in a container")
        self.image = self.podman.image_id(image)
        return self.image

    def launch(self, command: str, name: str) -> Launch:
        assert self.image, "prepare() pins the image first"
        argv = self.podman.command(
            command,
            image=self.image,
            name=name,
            workspace=self.environment.workspace,
            env=self.environment.variables,
            env_file=self.env_file,
            binds=self.binds,
            labels=self.labels,
        )
        return Launch(self.process_env, argv, lambda: self.podman.remove(name))


Runner = SandboxRunner | HostRunner | ContainerRunner


def copy_inputs(environment: StepEnvironment) -> None:
    """Replace each stage-in link by a private copy of the replica's bytes."""
    for rel, target, _ in environment.links:
        place = environment.workspace / rel
        fresh = place.with_name(f".{place.name}.{secrets.token_hex(4)}.copy")
        with open(target, "rb") as source:
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as copy:
                shutil.copyfileobj(source, copy, 1024 * 1024)
        os.replace(fresh, place)


def _write_env_file(environment: StepEnvironment) -> Path | None:
    """The secret variables as podman's ``--env-file`` (0600, outside what is bound)."""
    if not environment.secrets:
        return None
    for name, value in environment.secrets.items():
        if "\n" in value or "\r" in value:
            raise Invalid(
                f"secret {name} holds several lines, which a container's environment cannot"
                f" take: add it as a file secret ('vre secret add {name} --file PATH')"
            )
    environment.private.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = environment.private / "podman.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{k}={v}\n" for k, v in sorted(environment.secrets.items()))
    return path


def for_settings(settings: Settings, environment: StepEnvironment) -> Runner:
    """The runner the operator configured; raises ``Invalid`` for a runtime we lack."""
    runtime = settings.container_runtime.strip()
    if runtime in ("", "none", HOST):
        if settings.step_isolation == "unisolated-host":
            return HostRunner(environment)
        return SandboxRunner(environment, settings)
    if Path(runtime).name not in SUPPORTED:
        raise Invalid(
            f"container runtime {runtime!r} is not supported: set VRE_CONTAINER_RUNTIME"
            " to 'podman' or leave it empty to run steps on the host"
        )
    podman = Podman.from_settings(settings)
    podman.user = sandbox.step_user(settings.step_user, settings.step_uids, environment.run_id)
    labels = {DEPLOYMENT: deployment(settings), WORKER: environment.worker}
    return ContainerRunner(environment, podman, labels)


def deployment(settings: Settings) -> str:
    """Names this VRE's containers apart from another VRE's on the same host."""
    return hashlib.sha256(settings.resolved_database_url().encode()).hexdigest()[:16]


def remove_orphans(settings: Settings, executing: Callable[[set[int]], dict[int, str]]) -> int:
    """Remove this deployment's step containers on this host that no worker executes:
    their run ended, or it is executed again by another worker (a killed worker leaves
    its container running). ``executing`` maps run ids to the worker executing them."""
    if settings.container_runtime.strip() in ("", "none", HOST):
        return 0
    podman = Podman.from_settings(settings)
    found = podman.run_containers(deployment(settings))
    alive = executing({run_id for run_id, _ in found.values()}) if found else {}
    gone = [name for name, (run_id, worker) in found.items() if alive.get(run_id) != worker]
    for name in gone:
        podman.remove(name)
    return len(gone)


__all__ = ["HOST", "HOST_NOTE", "Runner", "StepEnvironment", "container_name", "for_settings"]
