// Small DOM helpers: build elements without innerHTML, format values, show notices.

/**
 * Create an element. `props`: `class`, `text`, `on<Event>` handlers, `dataset`,
 * booleans (set when true), anything else as an attribute. Children may be strings,
 * nodes, arrays, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value") element.value = value;
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the content of `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let ids = 0;
/** Return a new unique id for label/aria wiring. */
export function uid(prefix = "id") {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A coloured badge for a module status or a run status. */
export function statusBadge(status) {
  const value = status || "unknown";
  return h("span", { class: `badge status-${value.toLowerCase()}`, text: value });
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Format an ISO date-time for people; "—" when empty. */
export function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateFormat.format(date);
}

/** A <time> element for an ISO date-time. */
export function timeEl(value) {
  return value ? h("time", { datetime: value, title: value, text: when(value) }) : "—";
}

/** A section with a heading wired to it (aria-labelledby). */
export function section(title, ...children) {
  const id = uid("section");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id, text: title }), children);
}

/** A table: `columns` are header labels; `rows` arrays of cells. */
export function table(columns, rows, { caption, empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "empty", text: empty });
  return h(
    "table",
    {},
    caption ? h("caption", { class: "visually-hidden", text: caption }) : null,
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", { scope: "col", text: c })),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((cells) =>
        h(
          "tr",
          {},
          cells.map((cell) => h("td", {}, cell)),
        ),
      ),
    ),
  );
}

/** An error box for an ApiError (or any Error), with the problem's lists. */
export function errorBox(error, title) {
  const problem = error.problem || {};
  const items = [];
  for (const unmet of problem.unmet || []) {
    items.push(`${unmet.module} needs ${unmet.dependency} ${unmet.range}: ${unmet.reason}`);
  }
  for (const missing of problem.missingConfig || []) {
    items.push(`${missing.module} needs config: ${missing.keys.join(", ")}`);
  }
  if (Array.isArray(problem.dependents) && problem.dependents.length) {
    items.push(`dependents: ${problem.dependents.join(", ")}`);
  }
  for (const item of problem.errors || []) {
    items.push(item.path ? `${item.path}: ${item.message}` : item.message);
  }
  return h(
    "div",
    { class: "alert error", role: "alert" },
    h("strong", { text: title || problem.title || "Error" }),
    h("p", { text: error.message }),
    items.length
      ? h(
          "ul",
          {},
          items.map((text) => h("li", { text })),
        )
      : null,
    problem.logTail ? h("pre", { class: "log", text: problem.logTail }) : null,
  );
}

/** Show a short notice at the bottom of the screen. */
export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const note = h("div", { class: `toast ${kind}`, text: message });
  region.append(note);
  setTimeout(() => note.remove(), 4000);
}
