"""Job sync-inventory: count the VMs the (fake) vCenter reports."""

from handlers.inventory import load_vms


def handler(context):
    vms = load_vms()
    return {"vms": len(vms), "poweredOn": sum(vm["powerState"] == "poweredOn" for vm in vms)}
