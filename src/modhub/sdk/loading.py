"""Load a handler from a module folder and call it the way the platform does.

`call_handler` is the test helper for module authors: it runs a handler locally, in the
current process, with the same loading rules and return-value handling as a worker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from modhub.sdk.types import JobContext, Request, Response

DEFAULT_FUNCTION = "handler"
# One import at a time: a handler file is in sys.modules before its code has run, and a
# second thread must not take that half-made module for the finished one.
_IMPORTING = threading.RLock()


class HandlerNotFound(Exception):
    """The handler file or function does not exist."""


def split_ref(ref: str) -> tuple[str, str]:
    """Split `handlers/x.py:function` into file and function (default `handler`)."""
    file, sep, function = ref.rpartition(":")
    if sep and function.isidentifier():
        return file, function
    return ref, DEFAULT_FUNCTION


def load_handler(
    module_dir: Path, ref: str, cache: dict[str, ModuleType] | None = None
) -> Callable[..., Any]:
    """Import the handler's file from `module_dir` and return its function."""
    file, function = split_ref(ref)
    root = module_dir.resolve()
    path = (root / file).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.suffix != ".py":
        raise HandlerNotFound(f"handler file '{file}' does not exist in the module")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    dotted = ".".join(path.relative_to(root).with_suffix("").parts)
    module = cache.get(dotted) if cache is not None else None
    if module is None or getattr(module, "__file__", None) != str(path):
        with _IMPORTING:
            module = _import(dotted, path, file)
        if cache is not None:
            cache[dotted] = module
    target = getattr(module, function, None)
    if not callable(target):
        raise HandlerNotFound(f"'{file}' has no function '{function}'")
    return target  # type: ignore[no-any-return]


def _import(dotted: str, path: Path, file: str) -> ModuleType:
    """Return the module of handler file `path`, importing it unless it is already loaded."""
    module = sys.modules.get(dotted)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    spec = importlib.util.spec_from_file_location(dotted, path)
    if spec is None or spec.loader is None:
        raise HandlerNotFound(f"cannot import '{file}'")
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        # As the import system does: a failed import leaves nothing behind, so the next
        # call imports the file again instead of finding a module without its functions.
        if sys.modules.get(dotted) is module:
            del sys.modules[dotted]
        raise
    return module


def to_response(value: Any) -> Response:
    """Turn what a handler returned into a Response."""
    if isinstance(value, Response):
        return value
    if isinstance(value, bytes | bytearray):
        return Response(body=bytes(value))
    return Response(json=value)


def invoke(function: Callable[..., Any], argument: Any) -> Any:
    """Call a sync or async handler and return its result."""
    result = function(argument)
    if inspect.isawaitable(result):
        return asyncio.run_coroutine_threadsafe(_await(result), _handler_loop()).result()
    return result


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _handler_loop() -> asyncio.AbstractEventLoop:
    """Return the event loop async handlers run on: one for the process, as in a worker.

    A handler may keep loop-bound objects between calls (an `httpx.AsyncClient` made at
    import), and the caller may itself be running a loop (an async test).
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="modhub-handlers", daemon=True).start()
        return _loop


async def _await(awaitable: Any) -> Any:
    return await awaitable


def call_handler(module_dir: str | Path, ref: str, request: Request) -> Response:
    """Run a route handler locally as the platform would, and return its Response."""
    return to_response(invoke(load_handler(Path(module_dir), ref), request))


def run_job(module_dir: str | Path, ref: str, context: JobContext) -> Any:
    """Run a job handler locally as the platform would, and return its result."""
    return invoke(load_handler(Path(module_dir), ref), context)
