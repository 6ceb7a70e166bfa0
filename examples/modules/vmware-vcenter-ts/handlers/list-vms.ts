// GET /vms: the VMs kept in the store by the last sync and by POST /vms, optionally
// filtered by ?powerState=.
import type { Request } from "../modhub";
import { storedVms } from "../lib/inventory";

export async function handler(request: Request) {
  let vms = await storedVms(request.store);
  const state = request.query.powerState;
  if (state) vms = vms.filter((vm) => vm.powerState === state);
  const syncedAt = await request.store.get<string>("synced-at");
  const body: Record<string, unknown> = {
    host: request.config.vcenterHost ?? null,
    items: vms,
    total: vms.length,
    syncedAt,
  };
  if (syncedAt === null) {
    body.hint =
      "the inventory has not been synced yet: run `modhub jobs run vmware-vcenter-ts sync-inventory`";
  }
  return body;
}
