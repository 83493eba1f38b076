"""Domain errors → ``{"error", "message"}`` with the matching HTTP status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vre.errors import VREError, clip


def body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def _validation_message(error: dict[str, Any]) -> str:
    """``rule_id (path): Input should be ...``: where the bad value was, never the value.

    The input itself is not echoed (it may be megabytes); pydantic's message names the
    bound it broke."""
    loc = [str(p) for p in error.get("loc", ())]
    where = loc[0] if loc and loc[0] in ("path", "query", "header", "body", "cookie") else ""
    field = ".".join(loc[1:] if where else loc)
    message = str(error.get("msg") or "invalid request")
    if not field:
        return message if where in ("", "body") else f"{where}: {message}"
    place = f" ({where})" if where and where != "body" else ""
    return f"{clip(field)}{place}: {message}"


def install(app: FastAPI) -> None:
    @app.exception_handler(VREError)
    async def domain_error(_: Request, exc: VREError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return JSONResponse(
            body(exc.code, exc.message), status_code=exc.status, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = _validation_message(errors[0]) if errors else "invalid request"
        return JSONResponse(body("invalid", message), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONResponse(
            body(code, clip(exc.detail, 300)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
