"""POST /vms: validate a VM request and answer what would be created (the inventory is fake)."""

from modhub.sdk import Response


def handler(request):
    body = request.json or {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return Response(status=422, json={"error": "name is required"})
    vm = {
        "id": "vm-new",
        "name": name,
        "powerState": "poweredOff",
        "cpus": int(body.get("cpus", 1)),
        "memoryMb": int(body.get("memoryMb", 1024)),
    }
    return Response(status=201, json=vm)
