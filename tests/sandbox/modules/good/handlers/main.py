"""A well-behaved module: answers quickly, every time."""

import os


def handler(request):
    return {"good": True, "n": request.query.get("n"), "pid": os.getpid()}
