"""What a worker may ask the server for while it runs a handler: module services.

A handler's `request.store` and `request.modules` (and a job's `context.…`) send frames
over the worker's own stdin/stdout channel:

    worker → server  {"call": n, "rid": <request id>, "service": "store"|"modules",
                      "op": "...", "args": {...}}
    server → worker  {"reply": n, "ok": true, "result": ...}
                     {"reply": n, "ok": false, "error": "<ErrorName>", "message": "..."}

The server knows which module is asking from the channel the frame came in on, never
from anything in the frame: `rid` only names which of that worker's own requests in
flight the call belongs to (for its user, deadline and call depth), and a `rid` that is
not one of them is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from modhub.errors import ModhubError

log = logging.getLogger("modhub.sandbox")
MAX_CALL_DEPTH = 8


@dataclass(frozen=True)
class CallerContext:
    """Who is asking: the module (from the channel), and the request or job it serves."""

    module: str  # the calling module: the worker's runtime, never a value from the frame
    version: str
    user: dict[str, Any] | None  # {"username", "role", "permissions"} of the original request
    job: str | None  # the job's name when the call comes from a job run (then user is None)
    deadline: float  # time.monotonic() when the original request or job times out
    depth: int = 0  # 0 for the request or job itself; each module-to-module call adds 1
    request_id: str = ""

    def deeper(self, module: str, version: str) -> CallerContext:
        """Return the context of a call that this caller makes into `module`."""
        return replace(self, module=module, version=version, depth=self.depth + 1)


ServiceHandler = Callable[[CallerContext, str, dict[str, Any]], Awaitable[Any]]
"""`handler(context, op, args)` → a JSON-able result; raises a ModhubError to refuse."""


async def serve(
    services: dict[str, ServiceHandler],
    contexts: dict[int, CallerContext],
    message: dict[str, Any],
    worker: str,
) -> dict[str, Any]:
    """Return the reply (without its number) to one `call` frame from a worker, whose
    requests in flight are `contexts`."""
    rid = message.get("rid")
    context = contexts.get(rid) if isinstance(rid, int) else None
    handler = services.get(str(message.get("service")))
    args = message.get("args")
    if context is None or handler is None or not isinstance(args, dict):
        what = "not a request of this worker" if context is None else "not a module service"
        return {"ok": False, "error": "ServiceError", "message": f"refused: {what}"}
    try:
        result = await handler(context, str(message.get("op")), args)
    except ModhubError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": exc.detail}
    except Exception:
        log.exception("a module service call of %s failed", worker)
        return {"ok": False, "error": "ServiceError", "message": "the service failed"}
    return {"ok": True, "result": result}
