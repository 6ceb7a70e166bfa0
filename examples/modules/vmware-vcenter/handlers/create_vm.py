"""POST /vms: keep a new VM in the store, stamped with who created it (asked of core-auth),
and tell the modules that subscribe to `vmware-vcenter/vm.created`."""

import uuid

from handlers.inventory import VM_PREFIX
from modhub.sdk import Response


def handler(request):
    body = request.json or {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return Response(status=422, json={"error": "name is required"})
    whoami = request.modules.call("core-auth", "GET", "/whoami")
    if whoami.status != 200:
        return Response(status=502, json={"error": f"core-auth answered {whoami.status}"})
    vm = {
        "id": f"vm-{uuid.uuid4().hex[:8]}",
        "name": name,
        "powerState": "poweredOff",
        "cpus": int(body.get("cpus", 1)),
        "memoryMb": int(body.get("memoryMb", 1024)),
        "createdBy": whoami.json["username"],
    }
    request.store.set(VM_PREFIX + vm["id"], vm, if_version=0)
    request.events.emit(
        "vm.created",
        {k: vm[k] for k in ("id", "name", "cpus", "memoryMb", "createdBy")},
    )
    return Response(status=201, json=vm)
