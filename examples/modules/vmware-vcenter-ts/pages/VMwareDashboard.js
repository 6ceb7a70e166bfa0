// VMware dashboard: the VMs the module keeps in its store, through its own API route.
export async function mount(element, context) {
  element.innerHTML = "<p>Loading VMs…</p>";
  const response = await context.fetch(`${context.apiBase}/vms`);
  const body = await response.json();
  element.innerHTML = "";
  const note = document.createElement("p");
  note.textContent = body.hint
    ? body.hint
    : `${body.total} VMs, last synced ${body.syncedAt}`;
  element.appendChild(note);
  const table = document.createElement("table");
  table.innerHTML =
    "<thead><tr><th>Name</th><th>Power</th><th>CPUs</th><th>Memory (MB)</th><th>Created by</th></tr></thead>";
  const rows = document.createElement("tbody");
  for (const vm of body.items || []) {
    const row = document.createElement("tr");
    for (const value of [vm.name, vm.powerState, vm.cpus, vm.memoryMb, vm.createdBy || "vCenter"]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.appendChild(cell);
    }
    rows.appendChild(row);
  }
  table.appendChild(rows);
  element.appendChild(table);
}

export function unmount(element) {
  element.innerHTML = "";
}
