"""Steps on the host, each in a bubblewrap sandbox: the default way a step runs.

A step sees the host's system files read-only, the platform's Python read-only, its own
workspace read-write, its staged inputs read-only, a private ``/tmp``, and nothing else:
not ``$VRE_HOME``, the database, other workspaces, other processes (its own PID
namespace), the network (its own network namespace: the database and the API listen on
loopback) nor the worker's environment (it gets only what the runner passes).

When the worker runs as root, the step runs as the unprivileged ``VRE_STEP_USER`` with no
capabilities and ``no_new_privs`` (``setpriv`` inside the sandbox, after bubblewrap has set
up its mounts as root); otherwise bubblewrap maps the worker's own unprivileged user into
a user namespace. Every process a step starts lives in the sandbox's PID namespace, which
ends when bubblewrap does: a stop, a timeout or the worker's death (``--die-with-parent``)
ends them all, whatever they do with sessions or signals.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vre.errors import Invalid

# System files a step may read. /etc is not bound whole: only what programs need to run.
SYSTEM = ("/usr",)
TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "passwd",
    "group",
    "hosts",
    "mime.types",
    "magic",
    "fonts",
    "protocols",
    "services",
)


@dataclass(frozen=True)
class StepUser:
    uid: int
    gid: int

    @classmethod
    def parse(cls, text: str) -> StepUser:
        """``NAME``, ``UID`` or ``UID:GID``: who a step is when the worker is root."""
        name, _, group = text.strip().partition(":")
        try:
            if name.isdigit():
                uid = int(name)
                gid = int(group) if group else uid
            else:
                entry = pwd.getpwnam(name)
                uid, gid = entry.pw_uid, int(group) if group else entry.pw_gid
        except (KeyError, ValueError):
            raise Invalid(f"VRE_STEP_USER {text!r} is not a user on this host") from None
        if uid == 0 or gid == 0:
            raise Invalid("VRE_STEP_USER must not be root: steps run unprivileged")
        return cls(uid, gid)


def step_user(text: str, uids: str = "", run_id: int = 0) -> StepUser | None:
    """Who a run's steps are when the worker is root: the configured user, else a user of
    their own from the ``uids`` range (``FIRST-LAST``), one per run, so that no limit
    counted per user (processes) and no file mode lets one run's steps touch another's.
    ``None`` when the worker is not root (its own user, mapped into a user namespace)."""
    if os.geteuid() != 0:
        return None
    if text.strip():
        return StepUser.parse(text)
    first, _, last = uids.partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise Invalid(f"VRE_STEP_UIDS {uids!r} is not a range FIRST-LAST of user ids") from None
    if not 0 < low <= high:
        raise Invalid(f"VRE_STEP_UIDS {uids!r} is not a range FIRST-LAST of user ids")
    uid = low + run_id % (high - low + 1)
    return StepUser(uid, uid)


def executable(configured: str) -> str:
    found = shutil.which(configured or "bwrap")
    if not found:
        raise Invalid(
            "bubblewrap (bwrap) is not installed, and steps run in its sandbox: install it"
            " ('apt-get install bubblewrap'), or set VRE_STEP_ISOLATION=unisolated-host to"
            " run steps with the worker's own rights"
        )
    return found


@dataclass
class Sandbox:
    """The bubblewrap command line for one run's steps."""

    bwrap: str
    workspace: Path
    read_only: list[Path]  # staged inputs' targets and the file secrets' directory
    user: StepUser | None
    tmp_size: int = 256 * 1024 * 1024  # its /tmp is memory: bounded (VRE_SANDBOX_TMP_SIZE)
    processes: int = 0  # RLIMIT_NPROC (VRE_STEP_PROCESSES): a fork bomb ends there
    file_size: int = 0  # RLIMIT_FSIZE: no single file past the workspace quota

    def argv(self, command: str) -> list[str]:
        argv = [self.bwrap, "--die-with-parent", "--new-session"]
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try"]
        argv += ["--unshare-user"] if self.user is None else []
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(self.tmp_size),
            "--tmpfs",
            "/tmp",
        ]
        argv += _system_binds()
        binds = [(p, True) for p in _python_roots()] + [(p, True) for p in self.read_only]
        binds.append((self.workspace, False))
        argv += _mount_points(p for p, _ in binds)
        for path, ro in binds:
            argv += ["--ro-bind" if ro else "--bind", str(path), str(path)]
        argv += ["--chdir", str(self.workspace)]
        limits = [f"--nproc={self.processes}"] if self.processes else []
        limits += [f"--fsize={self.file_size}"] if self.file_size else []
        if limits:  # set before the user changes, kept by everything the step starts
            argv += ["prlimit", *limits, "--"]
        if self.user is not None:
            argv += [
                "setpriv",
                f"--reuid={self.user.uid}",
                f"--regid={self.user.gid}",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]
        return [*argv, "bash", "-c", command]


def _system_binds() -> list[str]:
    argv: list[str] = []
    for top in TOP_LINKS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in SYSTEM:
        argv += ["--ro-bind-try", path, path]
    for name in ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return argv


def _python_roots() -> list[Path]:
    """The interpreter the platform runs on and its venv: ``python`` in a step is ours."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    return [p for p in sorted(roots) if not str(p).startswith(SYSTEM)]


def _mount_points(paths: Iterable[Path]) -> list[str]:
    """Traversable (0755) directories above every bind: bubblewrap would otherwise copy
    the modes of the host's parents (``/root`` is 0700), and the unprivileged step could
    not reach its own workspace or Python."""
    made: list[str] = []
    seen: set[Path] = {Path("/"), Path("/tmp")}
    for path in paths:
        for parent in reversed(path.parents):
            if parent not in seen and not any(str(parent) == t for t in TOP_LINKS):
                seen.add(parent)
                made += ["--perms", "0755", "--dir", str(parent)]
    return made


def hand_over(root: Path, user: StepUser | None) -> None:
    """Give a workspace (or the file secrets' directory) to the step's user before its
    steps run: what the server and stage-in wrote there is root's.

    Never follows a link and skips files with several links: a link planted earlier
    must not make this hand over a file outside (``/etc/shadow``) to the step's user."""
    if user is None:
        return
    _own(root, user)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            _own(Path(directory) / name, user)


def _own(path: Path, user: StepUser) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        return
    if (info.st_uid, info.st_gid) != (user.uid, user.gid):
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
