"""Job sync-inventory: read the (fake) vCenter and keep its VMs in the module's store."""

from handlers.inventory import VM_PREFIX, load_vms


def handler(context):
    vms = load_vms()
    for vm in vms:
        context.store.set(VM_PREFIX + vm["id"], vm)
    context.store.set("synced-at", context.scheduled_time.isoformat())
    return {"vms": len(vms), "poweredOn": sum(vm["powerState"] == "poweredOn" for vm in vms)}
