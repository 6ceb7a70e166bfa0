// Notifications: one line per VM vmware-vcenter created, through the module's own API route.
export async function mount(element, context) {
  element.innerHTML = "<p>Loading notifications…</p>";
  const response = await context.fetch(`${context.apiBase}/notifications`);
  const body = await response.json();
  element.innerHTML = "";
  const note = document.createElement("p");
  note.textContent = `${body.total} notification(s)`;
  element.appendChild(note);
  const list = document.createElement("ul");
  for (const item of body.items || []) {
    const line = document.createElement("li");
    line.textContent = `${item.at.replace("T", " ").slice(0, 19)} — ${item.message}`;
    list.appendChild(line);
  }
  element.appendChild(list);
}

export function unmount(element) {
  element.innerHTML = "";
}
