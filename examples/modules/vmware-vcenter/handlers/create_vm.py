"""POST /vms: validate a VM request and answer what would be created (the inventory is fake)."""


def handler(request):
    body = request.json or {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return {"status": 422, "body": {"error": "name is required"}}
    vm = {"id": "vm-new", "name": name, "powerState": "poweredOff",
          "cpus": int(body.get("cpus", 1)), "memoryMb": int(body.get("memoryMb", 1024))}
    return {"status": 201, "body": vm}
