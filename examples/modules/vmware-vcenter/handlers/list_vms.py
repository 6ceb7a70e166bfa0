"""GET /vms: the VMs kept in the store by the last sync and by POST /vms, optionally
filtered by ?powerState=."""

from handlers.inventory import stored_vms


def handler(request):
    vms = stored_vms(request.store)
    state = request.query.get("powerState")
    if state:
        vms = [vm for vm in vms if vm["powerState"] == state]
    synced_at = request.store.get("synced-at")
    body = {
        "host": request.config.get("vcenterHost"),
        "items": vms,
        "total": len(vms),
        "syncedAt": synced_at,
    }
    if synced_at is None:
        body["hint"] = (
            "the inventory has not been synced yet: "
            "run `modhub jobs run vmware-vcenter sync-inventory`"
        )
    return body
