"""The fake vCenter (inventory.json beside the module) and the VMs kept in the store."""

import json
from pathlib import Path

INVENTORY = Path(__file__).resolve().parent.parent / "inventory.json"
VM_PREFIX = "vms/"


def load_vms():
    """Return the VMs the (fake) vCenter reports."""
    return json.loads(INVENTORY.read_text())


def stored_vms(store):
    """Return every VM kept in the module's store, in id order."""
    vms, cursor = [], None
    while True:
        page = store.list(VM_PREFIX, limit=1000, cursor=cursor)
        vms += [entry.value for entry in page.items]
        cursor = page.cursor
        if cursor is None:
            return vms
