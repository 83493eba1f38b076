"""External Rucio instances: the operator names them in a TOML file, runs stage from them.

``$VRE_HOME/rucio-instances.toml`` (or ``VRE_RUCIO_INSTANCES``), one table per instance::

    [atlas]
    rucio_host = "https://rucio.example.org"
    auth_host = "https://rucio-auth.example.org"
    auth_type = "userpass"          # userpass or x509
    account = "vre-service"
    username = "vre-service"        # userpass
    password = "..."
    # client_cert = "/etc/vre/cert.pem"   client_key = "/etc/vre/key.pem"   (x509)
    # ca_cert = "/etc/grid-security/certificates"   vo = "def"

Each transfer runs Rucio's own client (``rucio-clients``) in a child process with a
configuration file written for that call only: the client caches its configuration per
process, so two instances must never share one, and the credentials never reach a step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vre.config import get_settings
from vre.errors import Invalid, StorageError

LOCAL = "local"
AUTH_TYPES = ("userpass", "x509")
FIELDS = {
    "rucio_host",
    "auth_host",
    "auth_type",
    "account",
    "username",
    "password",
    "client_cert",
    "client_key",
    "ca_cert",
    "vo",
}


@dataclass(frozen=True)
class Instance:
    name: str
    rucio_host: str
    auth_host: str
    account: str
    auth_type: str = "userpass"
    username: str | None = None
    password: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ca_cert: str | None = None
    vo: str | None = None

    def client_config(self, token_dir: Path) -> str:
        """The ``[client]`` section Rucio's client reads (its only configuration)."""
        values = {
            "rucio_host": self.rucio_host,
            "auth_host": self.auth_host,
            "auth_type": self.auth_type,
            "account": self.account,
            "username": self.username,
            "password": self.password,
            "client_cert": self.client_cert,
            "client_key": self.client_key,
            "ca_cert": self.ca_cert,
            "vo": self.vo,
            "request_retries": "2",
            "auth_token_file_path": str(token_dir / "token"),
        }
        lines = ["[client]"]
        lines += [f"{k} = {v}" for k, v in values.items() if v is not None]
        return "\n".join(lines) + "\n"


def load(path: Path) -> dict[str, Instance]:
    """Every configured instance; a missing file means none (only ``local``)."""
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Invalid(f"{path}: not a valid TOML file ({exc})") from None
    found = {}
    for name, table in document.items():
        where = f"{path} [{name}]"
        if not isinstance(table, dict):
            raise Invalid(f"{where}: expected a table of settings")
        if name == LOCAL:
            raise Invalid(f"{where}: 'local' is this VRE's own lake and cannot be redefined")
        unknown = sorted(set(table) - FIELDS)
        if unknown:
            raise Invalid(f"{where}: unknown setting(s) {', '.join(unknown)}")
        missing = [k for k in ("rucio_host", "account") if not table.get(k)]
        if missing:
            raise Invalid(f"{where}: {', '.join(missing)} required")
        settings = {k: str(v) for k, v in table.items()}
        settings.setdefault("auth_host", settings["rucio_host"])
        settings.setdefault("auth_type", "userpass")
        if settings["auth_type"] not in AUTH_TYPES:
            raise Invalid(f"{where}: auth_type must be one of {', '.join(AUTH_TYPES)}")
        userpass = settings["auth_type"] == "userpass"
        needs = ("username", "password") if userpass else ("client_cert", "client_key")
        absent = [k for k in needs if not settings.get(k)]
        if absent:
            raise Invalid(f"{where}: {settings['auth_type']} needs {', '.join(absent)}")
        found[name] = Instance(name=name, **settings)
    return found


def get(path: Path, name: str) -> Instance:
    known = load(path)
    if name not in known:
        listed = ", ".join([LOCAL, *sorted(known)])
        raise Invalid(f"Rucio instance {name!r} is not configured (known: {listed}; see {path})")
    return known[name]


def call(instance: Instance, request: dict[str, Any]) -> Any:
    """Run one request through ``vre.workflows.rucio_job`` in a child process.

    The child gets no ``VRE_*`` variable (nor ``RUCIO_*``): what it needs of the VRE's
    settings travels in the request, and ``VRE_RUCIO_CALL_TIMEOUT`` bounds the call.
    """
    settings = get_settings()
    timeout = settings.rucio_call_timeout
    request = {**request, "block_size": settings.block_size}
    with tempfile.TemporaryDirectory(prefix="vre-rucio-") as private:  # see leftovers
        config = Path(private) / "rucio.cfg"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(instance.client_config(Path(private)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUCIO_", "VRE_"))}
        env.update(RUCIO_CONFIG=str(config), RUCIO_CLIENT_MODE="1", PYTHONWARNINGS="ignore")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "vre.workflows.rucio_job"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                cwd=private,
            )
        except subprocess.TimeoutExpired:
            raise StorageError(
                f"Rucio instance {instance.name!r}: no answer within {timeout:.0f} s"
            ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise StorageError(f"Rucio instance {instance.name!r}: {lines[-1]}")
    return json.loads(done.stdout)
