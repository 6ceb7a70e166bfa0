// Job sync-inventory: read the (fake) vCenter and keep its VMs in the module's store.
import type { JobContext } from "../modhub";
import { VM_PREFIX, loadVms } from "../lib/inventory";

export async function handler(context: JobContext) {
  const vms = loadVms();
  for (const vm of vms) await context.store.set(VM_PREFIX + vm.id, vm as any);
  await context.store.set("synced-at", context.scheduledTime.toISOString());
  return { vms: vms.length, poweredOn: vms.filter((vm) => vm.powerState === "poweredOn").length };
}
