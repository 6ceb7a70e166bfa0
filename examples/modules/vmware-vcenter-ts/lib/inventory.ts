// The fake vCenter (inventory.json, bundled in at install) and the VMs kept in the store.
import type { Store } from "../modhub";
import inventory from "../inventory.json";

export const VM_PREFIX = "vms/";

export interface VM {
  id: string;
  name: string;
  powerState: "poweredOn" | "poweredOff";
  cpus: number;
  memoryMb: number;
  createdBy?: string;
}

/** Return the VMs the (fake) vCenter reports. */
export function loadVms(): VM[] {
  return inventory as VM[];
}

/** Return every VM kept in the module's store, in id order. */
export async function storedVms(store: Store): Promise<VM[]> {
  const vms: VM[] = [];
  let cursor: string | null = null;
  do {
    const page = await store.list<VM>(VM_PREFIX, { limit: 1000, cursor });
    vms.push(...page.items.map((entry) => entry.value));
    cursor = page.cursor;
  } while (cursor !== null);
  return vms;
}
