"""Errors a request can meet: one JSON body ``{"error", "hint"}`` with the right status code."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vidparse.errors import BadInputError, ConfigError, VidparseError


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
        status = 415 if isinstance(exc, BadInputError) else 400 if isinstance(exc, ConfigError) else 500
        return error_response(status, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(422, f"invalid request: {where}: {first.get('msg', 'invalid')}", "see /docs")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        hint = "see /docs for the routes" if exc.status_code in (404, 405) else None
        return error_response(exc.status_code, str(exc.detail), hint, getattr(exc, "headers", None))
