// VMware dashboard: lists the VMs through the module's own API route.
export async function mount(element, context) {
  element.innerHTML = "<p>Loading VMs…</p>";
  const response = await context.fetch(`${context.apiBase}/vms`);
  const body = await response.json();
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>Name</th><th>Power</th><th>CPUs</th><th>Memory (MB)</th></tr></thead>";
  const rows = document.createElement("tbody");
  for (const vm of body.items || []) {
    const row = document.createElement("tr");
    for (const value of [vm.name, vm.powerState, vm.cpus, vm.memoryMb]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.appendChild(cell);
    }
    rows.appendChild(row);
  }
  table.appendChild(rows);
  element.innerHTML = "";
  element.appendChild(table);
}

export function unmount(element) {
  element.innerHTML = "";
}
