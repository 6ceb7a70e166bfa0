"""GET /vms: the VMs of the (fake) vCenter, optionally filtered by ?powerState=."""

from handlers.inventory import load_vms


def handler(request):
    vms = load_vms()
    state = request.query.get("powerState")
    if state:
        vms = [vm for vm in vms if vm["powerState"] == state]
    return {"host": request.config.get("vcenterHost"), "items": vms, "total": len(vms)}
