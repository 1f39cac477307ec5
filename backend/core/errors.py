"""Domain errors raised by crud and services; `backend.main` maps them to HTTP statuses.

crud stays free of HTTP types: it raises these, and one handler per class turns
them into 404 / 409 / 422 answers with a `detail` that names the problem.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class; `detail` is the message the client sees."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(StudioError):
    status_code = 404

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")


class ConflictError(StudioError):
    status_code = 409


class InvalidInputError(StudioError):
    """Input that passed the schema but is wrong in context; `field` names it."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class SchemaOutdatedError(RuntimeError):
    """The database's Alembic revision is behind the code's head."""


class InsecureConfigError(RuntimeError):
    """The API would listen beyond loopback without a token."""
