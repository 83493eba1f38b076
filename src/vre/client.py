"""The Python client of the VRE API, used by the CLI and by notebooks.

Everything goes through HTTP except reading replica bytes, which a client that can
reach the storage element (same host, or XRootD) does directly.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx

from vre.errors import StorageError
from vre.lake.checksums import Checksummer

# The client's copy of the server's default VRE_BLOCK_SIZE (vre.config): the client
# never imports the server's settings, and a test keeps the two equal.
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
# A downloaded file is always new: never an existing file or a link written through.
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
Progress = Callable[[int], None]


def block_size() -> int:
    """Bytes per block when streaming: ``VRE_BLOCK_SIZE``, read when a stream starts."""
    value = os.environ.get("VRE_BLOCK_SIZE", "").strip()
    if not value:
        return DEFAULT_BLOCK_SIZE
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"VRE_BLOCK_SIZE must be a positive number of bytes, not {value!r}")
    return int(value)


class APIError(Exception):
    """An error answer from the server: ``code`` and ``message`` from its JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class NotLoggedIn(Exception):
    pass


def config_file() -> Path:
    """Plain environment reads: the client must not pay for the server's settings."""
    base = os.environ.get("VRE_CONFIG_DIR") or Path.home() / ".config" / "vre"
    return Path(base) / "config.json"


def save_login(url: str, token: str, account: str) -> Path:
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token, "account": account}, handle)
    return path


def stored_login() -> dict[str, str]:
    path = config_file()
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


def _q(name: str) -> str:
    """Quote a name for a URL path; '.' and '..' segments are encoded so that the server,
    not the HTTP library's path normalisation, judges them (and says why it refuses)."""
    segments = name.split("/")
    return "/".join(
        s.replace(".", "%2E") if s in (".", "..") else quote(s, safe="") for s in segments
    )


@dataclass
class Downloaded:
    did: str
    path: Path
    bytes: int
    rse: str
    direct: bool


class Client:
    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        login = stored_login()
        self.url = (url or os.environ.get("VRE_URL") or login.get("url") or "").rstrip("/")
        self.token = (
            token if token is not None else os.environ.get("VRE_TOKEN") or login.get("token")
        )
        if not self.url:
            raise NotLoggedIn("no VRE server known: run 'vre login URL' or set VRE_URL")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=300)

    # --- plumbing -------------------------------------------------------------
    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
                code, message = body.get("error", "error"), body.get("message", response.text)
            except (ValueError, AttributeError):
                code, message = "error", response.text or response.reason_phrase
            raise APIError(response.status_code, code, message)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._check(self.http.request(method, path, **kwargs))
        return response.json() if response.content else None

    # --- identity -----------------------------------------------------------------
    def login(self, account: str, password: str, lifetime_days: float = 30) -> dict[str, Any]:
        body = {"account": account, "password": password, "lifetime_days": lifetime_days}
        data = self.call("POST", "/auth/login", json=body)
        self.token = data["token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return data

    def whoami(self) -> dict[str, Any]:
        return self.call("GET", "/whoami")

    def add_account(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/accounts", json={"name": name, **fields})

    def accounts(self) -> list[dict[str, Any]]:
        return self.call("GET", "/accounts")

    def create_token(self, lifetime_days: float = 30, label: str = "") -> dict[str, Any]:
        return self.call("POST", "/tokens", json={"lifetime_days": lifetime_days, "label": label})

    def tokens(self) -> list[dict[str, Any]]:
        return self.call("GET", "/tokens")

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self.call("DELETE", f"/tokens/{token_id}")

    # --- catalogue ----------------------------------------------------------------
    def add_scope(self, name: str, account: str | None = None, public: bool = False) -> Any:
        return self.call(
            "POST", "/scopes", json={"name": name, "account": account, "public": public}
        )

    def scopes(self) -> list[dict[str, Any]]:
        return self.call("GET", "/scopes")

    def add_collection(
        self, scope: str, name: str, kind: str, meta: dict[str, Any] | None = None
    ) -> Any:
        body = {"scope": scope, "name": name, "type": kind, "meta": meta or {}}
        return self.call("POST", "/dids", json=body)

    def set_open(self, scope: str, name: str, is_open: bool) -> Any:
        return self.call("PUT", f"/status/{scope}/{_q(name)}", json={"open": is_open})

    def attach(self, scope: str, name: str, dids: list[str]) -> Any:
        return self.call("POST", f"/attachments/{scope}/{_q(name)}", json={"dids": dids})

    def detach(self, scope: str, name: str, dids: list[str]) -> Any:
        return self.call("POST", f"/detachments/{scope}/{_q(name)}", json={"dids": dids})

    def list_dids(self, scope: str, pattern: str = "*", **params: Any) -> list[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v not in (None, False)}
        return self.call("GET", f"/dids/{scope}", params={"pattern": pattern, **query})

    def show(self, scope: str, name: str) -> dict[str, Any]:
        return self.call("GET", f"/dids/{scope}/{_q(name)}")

    def get_meta(self, scope: str, name: str) -> dict[str, Any]:
        return self.call("GET", f"/meta/{scope}/{_q(name)}")

    def set_meta(self, scope: str, name: str, meta: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/meta/{scope}/{_q(name)}", json={"meta": meta})

    def unset_meta(self, scope: str, name: str, key: str) -> dict[str, Any]:
        return self.call("DELETE", f"/meta/{scope}/{_q(name)}", params={"key": key})

    # --- storage elements ---------------------------------------------------------------
    def add_rse(
        self,
        name: str,
        prefix: str,
        attributes: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
    ) -> Any:
        body = {"name": name, "prefix": prefix, "attributes": attributes or {}}
        return self.call("POST", "/rses", json={**body, "options": options or {}})

    def set_rse_options(self, name: str, options: dict[str, str]) -> Any:
        return self.call("PUT", f"/rses/{name}/options", json={"options": options})

    def rses(self, expression: str | None = None) -> list[dict[str, Any]]:
        params = {"expression": expression} if expression else {}
        return self.call("GET", "/rses", params=params)

    def rse(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"/rses/{name}")

    # --- replicas -------------------------------------------------------------------
    def register(self, rse: str, files: list[dict[str, Any]], dataset: str | None = None) -> Any:
        return self.call(
            "POST", "/replicas/bulk", json={"rse": rse, "files": files, "dataset": dataset}
        )

    def replicas(self, dids: list[str], available_only: bool = False) -> list[dict[str, Any]]:
        body = {"dids": dids, "available_only": available_only}
        return self.call("POST", "/replicas/list", json=body)

    # --- rules, quotas, transfers, deletion -------------------------------------------
    def add_rule(self, did: str, rse_expression: str, **fields: Any) -> dict[str, Any]:
        body = {"did": did, "rse_expression": rse_expression, **fields}
        return self.call("POST", "/rules", json=body)

    def rules(self, did: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"did": did, "account": account}.items() if v}
        return self.call("GET", "/rules", params=params)

    def rule(self, rule_id: int) -> dict[str, Any]:
        return self.call("GET", f"/rules/{rule_id}")

    def delete_rule(self, rule_id: int) -> Any:
        return self.call("DELETE", f"/rules/{rule_id}")

    def set_quota(self, account: str, rse: str, limit: int) -> Any:
        return self.call("PUT", f"/quotas/{account}/{rse}", json={"bytes": limit})

    def quotas(self, account: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", "/quotas", params={"account": account} if account else {})

    def transfers(self, state: str | None = None, rse: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"state": state, "rse": rse}.items() if v}
        return self.call("GET", "/transfers", params=params)

    def reaper(self, dry_run: bool = True, grace: float = 0) -> list[dict[str, Any]]:
        return self.call("GET" if dry_run else "POST", "/reaper", params={"grace": grace})

    def erase(self, scope: str, name: str, force: bool = False) -> dict[str, Any]:
        return self.call("DELETE", f"/dids/{scope}/{_q(name)}", params={"force": force})

    # --- workflow runs ------------------------------------------------------------------
    def create_run(self, name: str, specification: str) -> dict[str, Any]:
        return self.call("POST", "/runs", json={"name": name, "specification": specification})

    def upload_to_run(self, run: str, path: str, data: bytes) -> Any:
        return self.call("PUT", f"/runs/{run}/workspace/{_q(path)}", content=data)

    def start_run(
        self,
        run: str,
        parameters: dict[str, Any] | None = None,
        *,
        restart: bool = False,
        restart_from: str | None = None,
    ) -> dict[str, Any]:
        body = {"parameters": parameters or {}, "restart": restart, "restart_from": restart_from}
        return self.call("POST", f"/runs/{run}/start", json=body)

    def runs(self) -> list[dict[str, Any]]:
        return self.call("GET", "/runs")

    def run_status(self, run: str) -> dict[str, Any]:
        return self.call("GET", f"/runs/{run}")

    def run_logs(self, run: str, step: str | None = None, *, full: bool = False) -> str:
        return b"".join(self.run_log_chunks(run, step, full=full)).decode("utf-8", "replace")

    def run_log_chunks(
        self, run: str, step: str | None = None, *, full: bool = False
    ) -> Iterator[bytes]:
        """The logs as they arrive (each step's cut at the server's limit unless ``full``)."""
        params = {**({"step": step} if step else {}), **({"full": "true"} if full else {})}
        yield from self._download(f"/runs/{run}/logs", params)

    def run_files(self, run: str, path: str = ".") -> dict[str, Any]:
        return self.call("GET", f"/runs/{run}/workspace", params={"path": path})

    def run_file(self, run: str, path: str) -> httpx.Response:
        return self._check(self.http.get(f"/runs/{run}/workspace/{_q(path)}"))

    def save_run_file(self, run: str, path: str, directory: Path) -> Path:
        """A workspace file, or a directory as ``NAME.zip``, streamed into ``directory``
        under a temporary name, then renamed: a plain new file (mode 0644 less the umask),
        never setuid, setgid or executable, whatever the workspace held; an existing
        file of that name is replaced, a link there is replaced, never written through."""
        name = PurePosixPath(path.rstrip("/")).name or run
        with self.http.stream("GET", f"/runs/{run}/workspace/{_q(path)}") as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            zipped = response.headers.get("content-type", "").startswith("application/zip")
            target = directory / (name + ".zip" if zipped else name)
            _write_new(response.iter_bytes(block_size()), target)
        return target

    def stop_run(self, run: str) -> dict[str, Any]:
        return self.call("POST", f"/runs/{run}/stop")

    def delete_run(self, run: str, workspace: bool = False) -> dict[str, Any]:
        return self.call("DELETE", f"/runs/{run}", params={"workspace": workspace})

    def add_secret(self, name: str, value: str, kind: str = "env", overwrite: bool = False) -> Any:
        body = {"name": name, "value": value, "kind": kind, "overwrite": overwrite}
        return self.call("POST", "/secrets", json=body)

    def secrets(self) -> list[dict[str, str]]:
        return self.call("GET", "/secrets")

    def delete_secret(self, name: str) -> Any:
        return self.call("DELETE", f"/secrets/{name}")

    # --- bytes ----------------------------------------------------------------------
    def upload(
        self,
        path: Path,
        scope: str,
        rse: str,
        *,
        name: str | None = None,
        dataset: str | None = None,
        meta: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Stream one file; its adler32 is computed on the way and compared with the server's."""
        name = name or path.name
        summer = Checksummer(md5=False)
        size = block_size()

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as handle:
                while chunk := handle.read(size):
                    summer.update(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk

        headers = {"Content-Length": str(path.stat().st_size)}
        if meta:
            headers["X-VRE-Meta"] = json.dumps(meta)
        params = {"rse": rse, **({"dataset": dataset} if dataset else {})}
        response = self.http.put(
            f"/files/{scope}/{_q(name)}", params=params, content=chunks(), headers=headers
        )
        result = self._check(response).json()
        mine = summer.adler32
        if result["adler32"] != mine:
            raise APIError(
                500,
                "checksum_mismatch",
                f"{scope}:{name}: server stored adler32 {result['adler32']}, file has {mine}",
            )
        return dict(result)

    def download(
        self,
        dids: list[str],
        directory: Path,
        *,
        through_api: bool = False,
        progress: Progress | None = None,
        on_file: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[Downloaded]:
        """Fetch every file under ``dids`` to ``directory/SCOPE/NAME``, checksum-verified."""
        done = []
        for item in self.replicas(dids, available_only=True):
            if on_file:
                on_file(item)
            done.append(self._fetch(item, directory, through_api, progress))
        return done

    def _fetch(
        self, item: dict[str, Any], directory: Path, through_api: bool, progress: Progress | None
    ) -> Downloaded:
        did = f"{item['scope']}:{item['name']}"
        if not item["replicas"]:
            raise APIError(404, "not_found", f"{did} has no available replica")
        from vre.lake import storage

        target = directory / item["scope"] / item["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for replica in item["replicas"]:
            direct = not through_api and _reachable(replica["url"])
            source = (
                storage.read(replica["url"], block_size())
                if direct
                else self._stream(item, replica["rse"])
            )
            try:
                size = _save(source, target, item["adler32"], progress)
                return Downloaded(did, target, size, replica["rse"], direct)
            except (APIError, ValueError, OSError, StorageError) as exc:
                errors.append(f"{replica['rse']}: {exc}")
        raise APIError(502, "download_failed", f"{did}: every replica failed ({'; '.join(errors)})")

    def _stream(self, item: dict[str, Any], rse: str) -> Iterator[bytes]:
        yield from self._download(f"/files/{item['scope']}/{_q(item['name'])}", {"rse": rse})

    def _download(self, path: str, params: dict[str, str]) -> Iterator[bytes]:
        with self.http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            yield from response.iter_bytes(block_size())


def _reachable(url: str) -> bool:
    """Whether this client can read the replica without the server's help."""
    from vre.lake import storage

    local = storage.local_path(url)
    if local is not None:
        return os.access(local, os.R_OK)
    return url.startswith("root://")


def _save(
    chunks: Iterator[bytes], target: Path, adler32: str | None, progress: Progress | None
) -> int:
    """Write to a temporary name, verify, then rename: a bad download leaves nothing."""
    part = target.with_name(target.name + ".vre-part")
    summer = Checksummer(md5=False)  # the catalogue's adler32 is what a download checks
    try:
        part.unlink(missing_ok=True)  # a crashed download's: never written through
        with os.fdopen(os.open(part, _NEW, 0o644), "wb") as handle:
            for chunk in chunks:
                summer.update(chunk)
                handle.write(chunk)
                if progress:
                    progress(len(chunk))
        if adler32 and summer.adler32 != adler32:
            raise ValueError(f"checksum mismatch: expected adler32 {adler32}, got {summer.adler32}")
        part.replace(target)
        return summer.bytes
    finally:
        summer.close()
        part.unlink(missing_ok=True)


def _write_new(chunks: Iterable[bytes], target: Path) -> int:
    """``chunks`` as a new file at ``target``, complete or not at all."""
    part = target.with_name(f".{target.name}.{secrets.token_hex(4)}.vre-part")
    size = 0
    try:
        with os.fdopen(os.open(part, _NEW, 0o644), "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    return size
