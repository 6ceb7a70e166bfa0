"""vmware-vcenter/vm.created: record one notification per event.

Keyed by the event's id, so a second delivery of the same event (a node died mid-delivery)
writes the same notification again instead of adding one.
"""


def handler(event):
    vm = event.payload
    who = vm.get("createdBy") or "vCenter"
    event.store.set(
        f"notification/{event.id:012d}",
        {
            "eventId": event.id,
            "message": f"VM {vm['name']} ({vm['id']}) was created by {who}",
            "vm": vm["id"],
            "at": event.emitted_at.isoformat(),
        },
    )
    event.logger.info("notified: VM %s created", vm["name"])
