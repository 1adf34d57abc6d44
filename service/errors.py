"""Errors a request can meet: one JSON body ``{"error", "hint"}`` with the right status code. Anything else is a
bug: logged with its traceback, answered with a 500 that names no path or detail."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vidparse.errors import BadInputError, ConfigError, VidparseError

log = logging.getLogger(__name__)
SCHEMA_HINT = "see the API's schema at /openapi.json"
BAD_BODY_HINT = "an upload is multipart/form-data with the file in the field 'file' (curl -F file=@clip.mp4)"


class ApiError(Exception):
    def __init__(self, status: int, error: str, hint: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"no {what} '{ident}'", f"list them with GET /v1/{what}s" if what == "stream"
                    else "use the id the POST returned")


def error_response(status: int, error: str, hint: str | None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.hint, exc.headers)

    @app.exception_handler(VidparseError)
    async def vidparse_error(request: Request, exc: VidparseError) -> JSONResponse:
        if isinstance(exc, (BadInputError, ConfigError)):
            return error_response(415 if isinstance(exc, BadInputError) else 400, exc.message, exc.hint)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return internal_error()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(422, f"invalid request: {where}: {first.get('msg', 'invalid')}", SCHEMA_HINT)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        hint = SCHEMA_HINT if exc.status_code in (404, 405) else BAD_BODY_HINT if exc.status_code == 400 else None
        return error_response(exc.status_code, str(exc.detail), hint, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette raises the exception again once this answer is sent: uvicorn logs it with its traceback.
        return internal_error()


def internal_error() -> JSONResponse:
    return error_response(500, "internal error", "the server log has the details")
