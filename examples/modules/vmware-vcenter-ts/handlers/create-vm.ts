// POST /vms: keep a new VM in the store, stamped with who created it (asked of core-auth).
import { randomUUID } from "node:crypto";
import type { Request } from "../modhub";
import { VM_PREFIX, type VM } from "../lib/inventory";

export async function handler(request: Request) {
  const body = request.json<Partial<VM>>() ?? {};
  if (typeof body.name !== "string" || !body.name) {
    return { status: 422, json: { error: "name is required" } };
  }
  const whoami = await request.modules.call<{ username: string }>("core-auth", "GET", "/whoami");
  if (whoami.status !== 200) {
    return { status: 502, json: { error: `core-auth answered ${whoami.status}` } };
  }
  const vm: VM = {
    id: `vm-${randomUUID().slice(0, 8)}`,
    name: body.name,
    powerState: "poweredOff",
    cpus: Math.trunc(Number(body.cpus ?? 1)),
    memoryMb: Math.trunc(Number(body.memoryMb ?? 1024)),
    createdBy: whoami.json!.username,
  };
  await request.store.set(VM_PREFIX + vm.id, vm as any, { ifVersion: 0 });
  const { id, name, cpus, memoryMb, createdBy } = vm;
  await request.events.emit("vm.created", { id, name, cpus, memoryMb, createdBy: createdBy! });
  return { status: 201, json: vm };
}
