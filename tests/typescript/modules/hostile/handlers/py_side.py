"""The Python half of a module that mixes languages."""


def handler(request):
    return {"language": "python", "pid": __import__("os").getpid()}
