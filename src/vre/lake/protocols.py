"""Storage protocols: which URLs we accept, their options, and their fsspec filesystems.

``storage`` moves the bytes; this module knows the differences between protocols:

- ``file:///path`` (POSIX) and ``root://host:port//path`` (XRootD, fsspec-xrootd);
- ``davs://``/``https://`` (WebDAV over TLS) and ``dav://``/``http://`` (plain), through
  webdav4; ``dav*`` is spelt ``http*`` on the wire;
- ``s3://bucket/path`` through s3fs (endpoint and credentials in the RSE's options).

Per-RSE options are strings set by an admin (they may hold secrets); they are checked
here and turned into fsspec arguments when a filesystem is built. The catalogue keeps
them sealed (``vre.sealing``): ``filesystem`` opens them, the one place that needs them
in plain text. Filesystems are cached per (scheme, host, options), so a client is not
created per file.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem

from vre import sealing
from vre.errors import Invalid

WEBDAV = {"davs": "https", "https": "https", "dav": "http", "http": "http"}
SCHEMES = ("file", "root", "davs", "https", "dav", "http", "s3")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")

# The options each protocol understands (key -> what it means, for error messages).
OPTIONS: dict[str, dict[str, str]] = {
    "file": {},
    "root": {},
    "webdav": {
        "username": "HTTP basic auth user (with password)",
        "password": "HTTP basic auth password",
        "token": "bearer token",
        "verify": "true, false or a CA bundle path",
        "cert": "client certificate file (e.g. an X.509 proxy)",
        "timeout": "seconds",
    },
    "s3": {
        "endpoint_url": "http(s)://host:port of the S3 service",
        "key": "access key id",
        "secret": "secret access key",
        "token": "session token",
        "region": "region name",
        "addressing_style": "path, virtual or auto",
        "verify": "true, false or a CA bundle path",
    },
}
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z")


def family(scheme: str) -> str:
    return "webdav" if scheme in WEBDAV else scheme


def check_prefix(prefix: str) -> str:
    """An RSE prefix must be an absolute URL of a protocol we can speak."""
    parts = urlsplit(prefix)
    if parts.scheme not in SCHEMES:
        raise Invalid(
            f"unsupported storage URL {prefix!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise Invalid(f"invalid file URL {prefix!r}: expected file:///absolute/path")
    if parts.scheme == "root" and (not parts.netloc or not parts.path.startswith("//")):
        raise Invalid(f"invalid XRootD URL {prefix!r}: expected root://host:port//path")
    if parts.scheme in ("file", "root"):
        return prefix.rstrip("/") if parts.path.rstrip("/") else prefix
    kind, expected = (
        ("S3", "s3://bucket/path")
        if parts.scheme == "s3"
        else ("WebDAV", f"{parts.scheme}://host[:port]/path")
    )
    if "?" in prefix or "#" in prefix:
        raise Invalid(f"invalid {kind} URL {prefix!r}: no query or fragment, expected {expected}")
    if "@" in parts.netloc:
        # not echoed: the part before '@' may be a password
        raise Invalid(f"invalid {kind} URL: credentials go in the RSE options, not in the URL")
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"invalid {kind} URL {prefix!r}: bad port, expected {expected}") from None
    if parts.scheme == "s3" and (port is not None or not S3_BUCKET.match(parts.netloc)):
        raise Invalid(
            f"invalid S3 URL {prefix!r}: expected {expected}, the bucket 3-63 lower-case"
            " letters, digits, '.' or '-' (the endpoint goes in the option endpoint_url)"
        )
    if parts.scheme != "s3" and not parts.hostname:
        raise Invalid(f"invalid WebDAV URL {prefix!r}: expected {expected}")
    return prefix.rstrip("/")


def check_options(prefix: str, options: Mapping[str, Any] | None) -> dict[str, str]:
    """The options of an RSE at ``prefix``: known keys, sensible values, kept as strings."""
    scheme = urlsplit(prefix).scheme
    known = OPTIONS.get(family(scheme), {})
    result: dict[str, str] = {}
    for key, value in (options or {}).items():
        if key not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise Invalid(f"unknown option {key!r} for {scheme}:// storage (accepted: {accepted})")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float) or str(value) == "":
            raise Invalid(f"option {key!r} must be a non-empty string")
        result[key] = str(value)
    for key, value in result.items():
        if key == "timeout":
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                raise Invalid(
                    f"option 'timeout' must be a positive number of seconds, not {value!r}"
                )
        if key == "addressing_style" and value not in ("path", "virtual", "auto"):
            raise Invalid(f"option 'addressing_style' must be path, virtual or auto, not {value!r}")
        if key == "endpoint_url" and urlsplit(value).scheme not in ("http", "https"):
            raise Invalid(f"option 'endpoint_url' must be an http(s):// URL, not {value!r}")
    if ("username" in result) != ("password" in result):
        raise Invalid("options 'username' and 'password' go together")
    return result


def _verify(value: Any) -> bool | str:
    """``verify``: true (system CAs), false (no check), or a CA bundle file."""
    text = str(value).lower()
    return True if text in TRUE else False if text in FALSE else str(value)


def _tls(verify: bool | str, cert: str | None) -> bool | ssl.SSLContext:
    """httpx's ``verify``: a CA bundle or a client certificate need an SSL context."""
    if cert is None and isinstance(verify, bool):
        return verify
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(cert))  # an X.509 proxy holds certificate and key
    return context


def _webdav(scheme: str, netloc: str, options: Mapping[str, Any]) -> AbstractFileSystem:
    from webdav4.fsspec import WebdavFileSystem

    kwargs: dict[str, Any] = {}
    if "username" in options:
        kwargs["auth"] = (str(options["username"]), str(options["password"]))
    if "token" in options:
        kwargs["headers"] = {"Authorization": f"Bearer {options['token']}"}
    if "verify" in options or "cert" in options:
        kwargs["verify"] = _tls(_verify(options.get("verify", True)), options.get("cert"))
    if "timeout" in options:
        kwargs["timeout"] = float(options["timeout"])
    return WebdavFileSystem(f"{WEBDAV[scheme]}://{netloc}", **kwargs)


def _s3(options: Mapping[str, Any]) -> AbstractFileSystem:
    from s3fs import S3FileSystem

    # Without these, botocore >= 1.36 checks CRC headers that ranged reads and
    # third-party servers do not send.
    config: dict[str, Any] = {
        "response_checksum_validation": "when_required",
        "request_checksum_calculation": "when_required",
    }
    if "addressing_style" in options:
        config["s3"] = {"addressing_style": options["addressing_style"]}
    client: dict[str, Any] = {}
    if "region" in options:
        client["region_name"] = options["region"]
    if "verify" in options:
        client["verify"] = _verify(options["verify"])
    return S3FileSystem(
        endpoint_url=options.get("endpoint_url"),
        key=options.get("key"),
        secret=options.get("secret"),
        token=options.get("token"),
        config_kwargs=config,
        client_kwargs=client,
        # fresh listings: the catalogue, not a client cache, is the source of truth
        use_listings_cache=False,
    )


_cache: dict[tuple[str, str, str], AbstractFileSystem] = {}
_lock = threading.Lock()


def split(url: str) -> tuple[str, str, str]:
    """(scheme, netloc, path) taken literally: nothing after the host is a query."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{url!r} is not a URL")
    netloc, _, path = rest.partition("/")
    return scheme, netloc, "/" + path


def filesystem(
    url: str, options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, str]:
    """The (cached) filesystem for ``url`` with ``options``, and the path inside it.

    Sealed options (the catalogue's) are opened only when a filesystem is built: the
    cache is keyed by the options as given, so a cached filesystem costs no opening."""
    scheme, netloc, path = split(url)
    given = dict(options or {})
    key = (scheme, netloc, json.dumps(given, sort_keys=True, default=str))
    with _lock:
        fs = _cache.get(key)
    if fs is None:
        opened = sealing.open_options(given)
        if scheme in WEBDAV:
            fs = _webdav(scheme, netloc, opened)
        elif scheme == "s3":
            fs = _s3(opened)
        else:
            cls = fsspec.get_filesystem_class(scheme)
            fs = cls(**cls._get_kwargs_from_urls(url), **opened)
        with _lock:
            fs = _cache.setdefault(key, fs)
    if scheme in WEBDAV:
        return fs, path
    if scheme == "s3":
        return fs, netloc + path.rstrip("/")
    return fs, fs._strip_protocol(url)


def _kind(fs: AbstractFileSystem) -> str:
    module = type(fs).__module__
    return "webdav" if module.startswith("webdav4") else "s3" if module.startswith("s3fs") else ""


# Directories made recently, per filesystem: many files land in the same hash
# directories, and on XRootD or WebDAV every mkdir is a round trip.
_MADE: OrderedDict[tuple[int, str], None] = OrderedDict()
_MADE_MAX = 4096
_MADE_LOCK = threading.Lock()


def makedirs(fs: AbstractFileSystem, path: str) -> None:
    """Make the directory ``path`` where the protocol has directories."""
    kind = _kind(fs)
    if kind == "s3":
        return  # object stores have no directories
    key = (id(fs), path)
    with _MADE_LOCK:
        if key in _MADE:
            _MADE.move_to_end(key)
            return
    if not (kind == "webdav" and fs.isdir(path)):  # one PROPFIND, not webdav4's walk up
        fs.makedirs(path, exist_ok=True)
    if kind != "file":
        with _MADE_LOCK:
            _MADE[key] = None
            while len(_MADE) > _MADE_MAX:
                _MADE.popitem(last=False)


def forget_directory(fs: AbstractFileSystem, path: str) -> None:
    """After a failed write: the directory may have gone, make it again next time."""
    with _MADE_LOCK:
        _MADE.pop((id(fs), path), None)


def move(fs: AbstractFileSystem, source: str, target: str) -> None:
    """Rename ``source`` to ``target``, replacing it (one MOVE on WebDAV, not copy + delete)."""
    if _kind(fs) == "webdav":
        fs.client.move(source, target, overwrite=True)
    else:
        fs.mv(source, target)


def abandon(handle: Any) -> None:
    """Close a file being written without publishing what it holds, where we can.

    webdav4 uploads on close and s3fs completes its multipart upload: both are told
    to discard instead. Other protocols have already written; the caller removes it.
    """
    dav = sys.modules.get("webdav4.fsspec")
    s3 = sys.modules.get("s3fs.core")
    if dav is not None and isinstance(handle, dav.UploadFile):
        handle.discard()
    elif s3 is not None and isinstance(handle, s3.S3File):
        handle.discard()
        handle.closed = True
    else:
        handle.close()


def errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the storage failed" for the protocols loaded so far."""
    found: list[type[BaseException]] = [OSError]
    if (dav := sys.modules.get("webdav4.client")) is not None:
        found.append(dav.ClientError)
    if (httpx := sys.modules.get("httpx")) is not None:
        found.append(httpx.HTTPError)
    if (boto := sys.modules.get("botocore.exceptions")) is not None:
        found += [boto.BotoCoreError, boto.ClientError]
    return tuple(found)
