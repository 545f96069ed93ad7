"""Domain errors. They carry meaning, not HTTP: the API maps them to status codes in one place.

MaasError
├── InvalidInput        the caller sent something that cannot be used (names what to fix)
│   └── PayloadTooLarge the body is over a configured limit
├── Unauthorized        no credential, or one that is unknown or revoked
├── Forbidden           a valid credential whose role does not allow the action
├── NotFound            no such resource for this tenant (another tenant's looks the same)
├── Conflict            the resource exists or is in a state that forbids the action
├── QuotaExceeded       a quota or rate limit was hit
└── Unavailable         a dependency is not ready (retry later)
"""

from __future__ import annotations

from typing import Any


class MaasError(Exception):
    """Base of every error the platform raises on purpose."""

    title = "Error"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(MaasError):
    title = "Invalid input"


class PayloadTooLarge(InvalidInput):
    title = "Payload too large"


class Unauthorized(MaasError):
    title = "Unauthorized"


class Forbidden(MaasError):
    title = "Forbidden"


class NotFound(MaasError):
    title = "Not found"

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__(f"{kind} '{identifier}' was not found")
        self.kind = kind
        self.identifier = identifier


class Conflict(MaasError):
    title = "Conflict"


class QuotaExceeded(MaasError):
    title = "Quota exceeded"


class Unavailable(MaasError):
    title = "Service unavailable"
