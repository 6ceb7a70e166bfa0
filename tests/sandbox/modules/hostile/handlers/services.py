"""Handlers that use module services, well and badly (the channel tests call them)."""

import asyncio
import json
import os
import struct

from modhub.sdk import StoreError


def roundtrip(request):
    """Set, read back, count and list through request.store."""
    version = request.store.set("greeting", {"text": "hi"})
    return {
        "version": version,
        "value": request.store.get("greeting"),
        "missing": request.store.get("nothing", "fallback"),
        "count": request.store.incr("hits"),
        "keys": [entry.key for entry in request.store.list().items],
    }


async def async_roundtrip(request):
    """The awaitable twins, from an async handler."""
    await request.store.aset("async", [1, 2, 3])
    return {"value": await request.store.aget("async"), "count": await request.store.aincr("n")}


def refused(request):
    """Catch a store error raised by the server."""
    try:
        request.store.set("too-big", "x")
    except StoreError as exc:
        return {"caught": type(exc).__name__, "message": str(exc)}
    return {"caught": None}


def call(request):
    """Call another module's route through the platform."""
    answer = request.modules.call("other", "GET", "/things", query={"q": "1"})
    return {"status": answer.status, "json": answer.json}


def _protocol_out():
    """Find the worker's protocol pipe: the writable pipe that is not stdout or stderr."""
    import fcntl

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            continue
        if fd > 2 and target.startswith("pipe:") and flags & os.O_ACCMODE == os.O_WRONLY:
            return fd
    raise RuntimeError("no protocol pipe found")


def forge(request):
    """Write hand-made call frames to the channel: another module's name in every field the
    frame has, a request id that is not ours, garbage; then a real call to see it answered."""
    fd = _protocol_out()
    frames = [
        {
            "call": 10_001,
            "rid": 999_999,
            "service": "store",
            "op": "set",
            "args": {"key": "k", "value": "forged", "module": "victim"},
        },
        {
            "call": 10_002,
            "rid": request.request_id,
            "service": "store",
            "op": "set",
            "args": {"key": "k", "value": "forged", "module": "victim"},
            "module": "victim",
        },
        {"call": 10_003, "rid": [1], "service": {"x": 1}, "op": None, "args": "nope"},
        {"call": "x", "rid": None},
        # Request ids are small numbers: one of these is this request's own.
        *(
            {
                "call": 20_000 + rid,
                "rid": rid,
                "service": "store",
                "op": "set",
                "args": {"key": "k", "value": "forged", "module": "victim"},
                "module": "victim",
            }
            for rid in range(1, 64)
        ),
    ]
    for frame in frames:
        data = json.dumps(frame).encode()
        os.write(fd, struct.pack(">I", len(data)) + data)
    return {"after": request.store.get("k", "absent")}


async def flood(request):
    """Send many store calls at once from one request."""
    count = int(request.query.get("count", "200"))
    results = await asyncio.gather(*(request.store.aincr("flood") for _ in range(count)))
    return {"last": max(results), "calls": len(results)}
