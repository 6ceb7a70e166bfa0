"""Isolation probes: each handler tries one thing and reports what happened as JSON.

A probe never raises: `{"ok": true, "result": ...}` when the attempt succeeded,
`{"ok": false, "error": "<exception class>", "message": ...}` when it failed.
"""

import os
import socket


def _attempt(action):
    try:
        return {"ok": True, "result": action()}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


def _read(path):
    with open(path, "rb") as handle:
        return handle.read(64).decode("latin-1")


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    return path


def _connect(host, port):
    with socket.create_connection((host, port), timeout=2) as sock:
        return sock.recv(16).decode()


def read(request):
    """Body: {"paths": [...]}; answer: {path: attempt}."""
    return {path: _attempt(lambda p=path: _read(p)) for path in request.json["paths"]}


def write(request):
    """Body: {"paths": [...], "text": ...}; answer: {path: attempt}."""
    text = request.json.get("text", "probe")
    return {path: _attempt(lambda p=path: _write(p, text)) for path in request.json["paths"]}


def listdir(request):
    """Body: {"paths": [...]}; answer: {path: attempt listing the folder}."""
    return {path: _attempt(lambda p=path: sorted(os.listdir(p))) for path in request.json["paths"]}


def connect(request):
    """Body: {"host", "port"}; answer: the attempt to connect and read a greeting."""
    return _attempt(lambda: _connect(request.json["host"], int(request.json["port"])))


def identity(request):
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
    }


def _fill(path, mb):
    chunk = b"\x01" * (1024 * 1024)
    with open(path, "wb") as handle:
        for _ in range(mb):
            handle.write(chunk)
            handle.flush()
    return mb


def fill(request):
    """Body: {"path", "mb"}; write `mb` MiB to `path` (a memory attack on a tmpfs)."""
    result = _attempt(lambda: _fill(request.json["path"], int(request.json["mb"])))
    _attempt(lambda: os.remove(request.json["path"]))
    return result


def processes(request):
    """Return the pids this worker can see."""
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
