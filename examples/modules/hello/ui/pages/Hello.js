// The console imports this module when the page opens, then calls mount().
export async function mount(element, context) {
  const who = context.user ? context.user.username : "world";
  const response = await context.fetch(`${context.apiBase}/greet/${encodeURIComponent(who)}`);
  const body = await response.json();
  element.innerHTML = "";
  const heading = document.createElement("h2");
  heading.textContent = body.message || "Hello";
  element.appendChild(heading);
}

export function unmount(element) {
  element.innerHTML = "";
}
