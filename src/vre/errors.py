"""Domain errors raised by services; the HTTP and CLI layers translate them.

Every message passes through :func:`VREError.__init__`, which bounds its length: an error
quoting what a user sent (a 5 MB expression, a huge name) never echoes it back whole.
Messages quote user input with :func:`shown`, which keeps the first ``ECHO`` characters.
Storage errors also lose the server's filesystem paths (see :class:`StorageError`).
"""

from __future__ import annotations

import re

ECHO = 100  # characters of user input an error message quotes
MAX_MESSAGE = 1000  # characters of any error message, whatever it quotes


def clip(value: object, limit: int = ECHO) -> str:
    """``value`` as text, cut to ``limit`` characters with a note of how much is left."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def shown(value: object, limit: int = ECHO) -> str:
    """``repr(value)`` for quoting user input in a message, cut like :func:`clip`."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"


class VREError(Exception):
    """Base of the errors a user can act on; ``code`` is the machine-readable name."""

    code = "error"
    status = 400

    def __init__(self, message: str) -> None:
        message = clip(message, MAX_MESSAGE)
        super().__init__(message)
        self.message = message


class Invalid(VREError):
    code = "invalid"
    status = 400


class Unauthorized(VREError):
    code = "unauthorized"
    status = 401


class Forbidden(VREError):
    code = "forbidden"
    status = 403


class NotFound(VREError):
    code = "not_found"
    status = 404


class Conflict(VREError):
    code = "conflict"
    status = 409


class QuotaExceeded(VREError):
    code = "quota_exceeded"
    status = 413


class TooLarge(VREError):
    code = "too_large"
    status = 413


class TooManyRequests(VREError):
    """Over a per-account limit: the client should wait ``retry_after`` seconds."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(VREError):
    """Over a server-wide limit (every account's share): retry after ``retry_after``."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# file:///srv/rse/x/y -> file://.../y, and a bare absolute path '/srv/rse/x/y' -> '.../y'
# (OSError quotes paths). Not after ':' or '/' or a word character, so URL paths
# (root://host//data, s3://bucket/key) and relative paths are left as they are.
_FILE_URL = re.compile(r"file://(?:[^\s'\"/]*)(/[^\s'\"]*)")
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def scrub_paths(message: str) -> str:
    """``message`` without the server's directories: only a path's last component stays."""
    message = _FILE_URL.sub(lambda m: "file://.../" + m.group(1).rsplit("/", 1)[-1], message)
    return _ABSOLUTE.sub(lambda m: ".../" + m.group(1), message)


class StorageError(VREError):
    """Storage failed. Its message is shown to users (and stored with transfers and
    rules), so the server's filesystem paths are taken out here, whoever raised it;
    the original exception stays chained for the operator's logs."""

    code = "storage_error"
    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(scrub_paths(message))
