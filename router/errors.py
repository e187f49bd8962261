"""Errors of the router. They are API errors, so the HTTP edge maps them to their status."""

from __future__ import annotations

from hub.web import ApiError


class RoutingError(ApiError):
    """An action that cannot be done (offer gone, not yours, thread busy…); ``status`` for HTTP."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, code, message, field)


def not_found(what: str) -> RoutingError:
    return RoutingError(404, "not_found", f"{what} not found")


def conflict(message: str, code: str = "conflict") -> RoutingError:
    return RoutingError(409, code, message)


def forbidden(message: str) -> RoutingError:
    return RoutingError(403, "forbidden", message)
