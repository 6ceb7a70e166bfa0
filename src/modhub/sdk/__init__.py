"""The handler contract: what a module's Python code receives and returns.

This package uses only the standard library: it runs inside module workers, in each
module's own environment, where the platform's dependencies are not installed.

A route handler is `def handler(request: Request) -> Response | Any` (or `async def`);
a job handler is `def handler(context: JobContext) -> Any`. A plain return value becomes
a JSON response with status 200; `bytes` become `application/octet-stream`.
"""

from modhub.sdk.events import Emitted, Event, EventHandler, Events
from modhub.sdk.loading import HandlerNotFound, call_handler, load_handler, run_job, to_response
from modhub.sdk.services import (
    CallRefused,
    Entry,
    EventInvalid,
    InvalidKey,
    InvalidValue,
    ModuleCalls,
    Page,
    QuotaExceeded,
    ServiceError,
    Store,
    StoreError,
    ValueTooLarge,
    VersionConflict,
)
from modhub.sdk.types import JobContext, JobHandler, Request, Response, RouteHandler, User

__all__ = [
    "CallRefused",
    "Emitted",
    "Entry",
    "Event",
    "EventHandler",
    "EventInvalid",
    "Events",
    "HandlerNotFound",
    "InvalidKey",
    "InvalidValue",
    "JobContext",
    "JobHandler",
    "ModuleCalls",
    "Page",
    "QuotaExceeded",
    "Request",
    "Response",
    "RouteHandler",
    "ServiceError",
    "Store",
    "StoreError",
    "User",
    "ValueTooLarge",
    "VersionConflict",
    "call_handler",
    "load_handler",
    "run_job",
    "to_response",
]
