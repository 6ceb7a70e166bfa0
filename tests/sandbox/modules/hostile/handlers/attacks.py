"""Hostile handlers: each one attacks the platform in its own way.

The sandbox tests run them in module workers and check that every attack is contained:
the server keeps answering, other modules keep working, and the attacker's worker is
killed or restarted. `ok`, `echo` and friends are the well-behaved control routes.
"""

import asyncio
import ctypes
import os
import sys
import time

from modhub.sdk import Response


def ok(request):
    return {"ok": True, "pid": os.getpid(), "uid": os.getuid()}


async def async_ok(request):
    await asyncio.sleep(0.01)
    return {"async": True, "query": request.query}


def echo(request):
    return Response(
        status=201,
        headers={"X-Echo": "yes"},
        json={
            "method": request.method,
            "path": request.path,
            "pathParams": request.path_params,
            "query": request.query,
            "user": request.user.username if request.user else None,
            "config": request.config,
        },
    )


def raw(request):
    return b"\x00\x01binary"


def boom(request):
    raise ValueError("boom: the secret detail of the failure")


def exit3(request):
    os._exit(3)


def segfault(request):
    ctypes.string_at(0)


def memory_bomb(request):
    data = b"\x01" * (1024 * 1024 * 1024)
    return {"allocated": len(data)}


def memory_creep(request):
    chunks = []
    while True:
        chunks.append(b"\x01" * (16 * 1024 * 1024))


def endless(request):
    while True:
        pass


def sleepy(request):
    seconds = float(request.query.get("seconds", "1"))
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


def fork_bomb(request):
    while True:
        try:
            while True:
                os.fork()
        except OSError:
            pass


def fork_hogs(request):
    """Fork children that each hold a share of the memory limit, inside RLIMIT_AS
    (which bounds one process), together far over it; report how each ended."""
    children, each_mb = int(request.query["children"]), int(request.query["mb"])
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                held = bytearray(each_mb * 1024 * 1024)
                for i in range(0, len(held), 4096):
                    held[i] = 1  # touch every page: resident, not just reserved
                time.sleep(3)
            finally:
                os._exit(0)
        pids.append(pid)
    ended = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        ended.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    return {"ended": ended}


def huge_response(request):
    return Response(body=b"x" * (100 * 1024 * 1024))


def noisy(request):
    print("hello from print()")
    # A fake protocol frame, as a handler might print by accident or on purpose.
    sys.stdout.write('\x00\x00\x00\x1b{"id":1,"ok":true,"result":1}\n')
    sys.stdout.flush()
    os.write(1, b"raw bytes on file descriptor 1\n")
    sys.stderr.write("and some on stderr\n")
    return {"quiet": False}


def long_log_line(request):
    sys.stderr.write("y" * (17 * 1024 * 1024))  # one line, over the pool's 16 MB limit
    sys.stderr.write("\nafter the long line\n")
    sys.stderr.flush()
    return {"logged": True}


def huge_lines(request):
    """Print `count` lines of `mib` MiB each (print() goes to the module log), then a marker."""
    count, size = int(request.query["count"]), int(request.query["mib"]) * 1024 * 1024
    line = "z" * size
    for _ in range(count):
        print(line)
    print("after the huge lines")
    return {"printed": count * (size + 1)}


def many_lines(request):
    """Print `count` short numbered lines at once."""
    count = int(request.query["count"])
    sys.stdout.write("".join(f"line {i:07d} of the flood\n" for i in range(count)))
    return {"printed": count}


def read_file(request):
    with open(request.query["path"], "rb") as handle:
        return handle.read()


def write_file(request):
    with open(request.query["path"], "w") as handle:
        handle.write("written by a hostile module")
    return {"wrote": request.query["path"]}
