"""Domain errors raised by services; the HTTP and CLI layers translate them."""

from __future__ import annotations


class VREError(Exception):
    """Base of the errors a user can act on; ``code`` is the machine-readable name."""

    code = "error"
    status = 400

    def __init__(self, message: str) -> None:
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


class StorageError(VREError):
    code = "storage_error"
    status = 502
