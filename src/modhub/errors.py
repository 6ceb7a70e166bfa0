"""The errors modhub raises: one root, structured fields, and an HTTP status each.

`modhub.api.problems` turns any of them into an RFC 9457 problem response; nothing
else in the code base needs to know about HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ModhubError(Exception):
    """Root of every error modhub reports to a caller."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    kind: ClassVar[str] = "internal"

    def __init__(
        self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra


class NotFound(ModhubError):
    """The named resource does not exist."""

    status, title, kind = 404, "Not found", "not-found"


class Conflict(ModhubError):
    """The request conflicts with the current state (a transition, a duplicate)."""

    status, title, kind = 409, "Conflict", "conflict"


class InvalidInput(ModhubError):
    """The request's content is invalid; `errors` lists every problem with its path."""

    status, title, kind = 422, "Invalid input", "invalid-input"


class DependencyCycle(InvalidInput):
    """Module dependencies would form a cycle; `cycle` names it, start to start."""

    kind = "dependency-cycle"

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(
            "dependencies would form a cycle: " + " → ".join(cycle),
            errors=[
                {
                    "path": f"/dependencies/modules/{cycle[1]}",
                    "code": "dependency_cycle",
                    "message": "cycle: " + " -> ".join(cycle),
                }
            ],
            cycle=cycle,
        )
        self.cycle = cycle


class Unauthorized(ModhubError):
    """No valid credentials were given."""

    status, title, kind = 401, "Unauthorized", "unauthorized"


class Forbidden(ModhubError):
    """The caller lacks the permission the operation needs."""

    status, title, kind = 403, "Forbidden", "forbidden"

    def __init__(self, permission: str) -> None:
        super().__init__(f"this needs the permission '{permission}'", permission=permission)


class TooManyAttempts(ModhubError):
    """Too many failed logins; retry after `retry_after` seconds."""

    status, title, kind = 429, "Too many attempts", "too-many-attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed logins; try again in {retry_after} s", retryAfter=retry_after
        )
        self.retry_after = retry_after


class PayloadTooLarge(ModhubError):
    """The request body is over the size limit."""

    status, title, kind = 413, "Payload too large", "payload-too-large"


class ConfigurationError(ModhubError):
    """modhub's own settings are wrong; raised at start-up, never per request."""

    kind = "configuration"


class HandlerMissing(ModhubError):
    """A route's handler cannot run: no code, a TypeScript file, or no such function."""

    status, title, kind = 501, "Not implemented", "handler-missing"


class HandlerFailed(ModhubError):
    """A module handler raised; the caller sees only the request id."""

    status, title, kind = 500, "Handler error", "handler-error"


class WorkerUnavailable(ModhubError):
    """The module's worker is down (crashed, restarting with backoff, or overloaded)."""

    status, title, kind = 503, "Module unavailable", "module-unavailable"


class HandlerTimeout(ModhubError):
    """The handler did not answer within the module's timeout."""

    status, title, kind = 504, "Handler timeout", "handler-timeout"


class BadWorkerResponse(ModhubError):
    """The worker answered something the platform refuses (too large, malformed)."""

    status, title, kind = 502, "Bad module response", "bad-module-response"


class CallRefused(ModhubError):
    """The platform refused a module's call to another module (the detail says why)."""

    status, title, kind = 403, "Call refused", "call-refused"
