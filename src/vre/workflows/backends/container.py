"""Steps in containers: each command runs with bash inside the step's ``environment``
image, through podman.

The workspace is bound at its own absolute path, so ``$REANA_WORKSPACE`` and absolute
paths a step computes mean the same inside and out. Files staged in as links into a
``file://`` RSE are reachable read-only: the link target's scope directory on that RSE
is bound read-only at its own path when the run's owner may read that whole scope (a
scope directory only holds files of its scope), else only the file itself. Secrets
reach the container through an ``--env-file`` (never podman's command line, which ``ps``
shows to every user of the host, nor podman's own environment, which would let a
secret named ``CONTAINERS_CONF`` reconfigure podman).

No registry is assumed: an image that is not in podman's store is pulled once, and a
failed pull fails the run with a message that says how to load the image instead.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vre.config import Settings
from vre.errors import Invalid, shown
from vre.workflows.backends.sandbox import StepUser, step_user


class ImageUnavailable(Invalid):
    """The step's environment image is not in podman's store and could not be pulled."""


@dataclass
class Podman:
    """How this VRE calls podman; options and timeouts come from the operator's settings."""

    executable: str
    global_options: list[str]
    run_options: list[str]
    pull_timeout: float  # VRE_IMAGE_PULL_TIMEOUT
    timeout: float  # VRE_PODMAN_TIMEOUT: every other podman command
    user: StepUser | None = None  # who a step is when podman runs as root
    _images: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Podman:
        runtime = settings.container_runtime.strip()
        executable = shutil.which(runtime) or runtime
        if not Path(executable).is_file():
            raise Invalid(f"container runtime {runtime!r} is not installed on this host")
        return cls(
            executable,
            shlex.split(settings.podman_options),
            shlex.split(settings.container_options),
            settings.image_pull_timeout,
            settings.podman_timeout,
            step_user(settings.step_user, settings.step_uids),
        )

    def _podman(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *self.global_options, *args],
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            check=False,
        )

    def image_id(self, image: str) -> str:
        """The store's ID for ``image``, pulling it if it is not there yet.

        ``image`` is a user's: only a plain registry reference is taken, and a pull always
        names the registry transport. Any other transport (``docker-archive:PATH``,
        ``oci:``, ``dir:``, ``containers-storage:``) would make podman, as the worker, read
        a path the user chose and retag the store every account's steps run from."""
        image = image_reference(image)
        if image in self._images:
            return self._images[image]
        found = self._podman("image", "inspect", "--format", "{{.Id}}", "--", image)
        if found.returncode != 0:
            try:
                pulled = self._podman(
                    "pull", "--quiet", "--", f"docker://{image}", timeout=self.pull_timeout
                )
            except subprocess.TimeoutExpired:
                raise ImageUnavailable(
                    f"environment image {image!r}: pulling it took over {self.pull_timeout:.0f} s"
                ) from None
            if pulled.returncode != 0:
                why = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
                raise ImageUnavailable(
                    f"environment image {image!r} is not on this host and could not be"
                    f" pulled ({why}); an operator can add it with 'podman load' or"
                    " 'podman import'"
                )
            found = self._podman("image", "inspect", "--format", "{{.Id}}", "--", image)
            if found.returncode != 0:
                raise ImageUnavailable(f"environment image {image!r} vanished after its pull")
        ident = found.stdout.strip().splitlines()[0]
        self._images[image] = ident
        return ident

    def command(
        self,
        command: str,
        *,
        image: str,
        name: str,
        workspace: Path,
        env: Mapping[str, str],
        env_file: Path | None = None,
        binds: Iterable[Path] = (),
        labels: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The argv that runs ``command`` with bash in ``image``.

        ``env`` values are written on the command line (nothing secret: ``ps`` shows it);
        secrets come from ``env_file``."""
        argv = [self.executable, *self.global_options, "run", "--rm", "--name", name]
        argv += ["--pull", "never", "--workdir", str(workspace)]
        if self.user is not None:  # rootful podman: the step is never root on the host
            argv += ["--user", f"{self.user.uid}:{self.user.gid}"]
        argv += ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
        for key, value in sorted((labels or {}).items()):
            argv += ["--label", f"{key}={value}"]
        argv += ["--volume", f"{workspace}:{workspace}:rw,nosuid,nodev"]
        for path in sorted(set(binds)):
            argv += ["--volume", f"{path}:{path}:ro,nosuid,nodev"]
        for key, value in sorted(env.items()):
            argv += ["--env", f"{key}={value}"]
        if env_file is not None:
            argv += ["--env-file", str(env_file)]
        argv += ["--http-proxy=false", *self.run_options]
        argv += [image, "bash", "-c", command]
        return argv

    def run_containers(self, deployment: str) -> dict[str, tuple[int, str]]:
        """This deployment's step containers on this host, in any state:
        name -> (run id, the worker that started it)."""
        listed = self._podman(
            "ps",
            "--all",
            "--filter",
            f"label={DEPLOYMENT}={deployment}",
            "--format",
            f'{{{{.Names}}}} {{{{index .Labels "{WORKER}"}}}}',
        )
        found = {}
        for line in listed.stdout.splitlines():
            name, _, worker = line.strip().partition(" ")
            match = NAME.match(name)
            if match:
                found[name] = (int(match.group(1)), worker.strip())
        return found

    def remove(self, name: str) -> None:
        """Make sure a stopped or timed-out command's container is gone."""
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._podman("rm", "--force", "--ignore", "--time", "0", name)


_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REFERENCE = re.compile(
    rf"(?:{_HOST}/)?{_NAME}(?:/{_NAME})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
# podman's transports, which read local paths or other stores rather than a registry
TRANSPORTS = re.compile(
    r"^(docker|docker-archive|docker-daemon|oci|oci-archive|dir|containers-storage|ostree|sif|tarball):",
    re.IGNORECASE,
)


def image_reference(image: str) -> str:
    """A step's ``environment`` as a registry reference, or ``Invalid``."""
    text = image.strip()
    if len(text) > 255 or TRANSPORTS.match(text) or not REFERENCE.fullmatch(text):
        raise ImageUnavailable(
            f"environment image {shown(text)} is not an image reference: name it as"
            " [REGISTRY/]NAME[:TAG][@sha256:DIGEST] (local archives and other transports"
            " are not taken; an operator loads images with 'podman load')"
        )
    return text


DEPLOYMENT, WORKER = "vre.deployment", "vre.worker"  # labels on every step container
NAME = re.compile(r"^vre-run(\d+)-s\d+-c\d+-[0-9a-f]+$")


def container_name(run_id: int, step: int, command: int) -> str:
    return f"vre-run{run_id}-s{step}-c{command}-{secrets.token_hex(3)}"


def input_binds(links: Iterable[tuple[str, str, bool]]) -> list[Path]:
    """Read-only binds that make stage-in links resolve inside a container.

    ``links`` are (workspace path, link target, owner may read the whole scope) from
    stage-in, never read back from the workspace: a step may have planted links of its
    own there. A link ``inputs/SCOPE/NAME`` points at ``<rse>/SCOPE/xx/yy/NAME`` (the
    lake's deterministic layout): bind ``<rse>/SCOPE`` when the whole scope is the
    owner's to read, else just the target file."""
    binds: set[Path] = set()
    for rel, target, whole_scope in links:
        relative = Path(rel).parts[1:]  # (scope, *name parts) under inputs/
        scope, depth = relative[0], len(relative) - 1
        parts = Path(target).parts
        if whole_scope and len(parts) > depth + 3 and parts[-(depth + 3)] == scope:
            binds.add(Path(*parts[: -(depth + 2)]))
        else:
            binds.add(Path(target))
    return _outermost(binds)


def _outermost(paths: set[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        if not any(k == path or k in path.parents for k in kept):
            kept.append(path)
    return sorted(kept)
