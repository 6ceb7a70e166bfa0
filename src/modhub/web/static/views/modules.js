// The module list: search, status filter, paging; the filters live in the URL.

import { get } from "../api.js";
import { errorBox, h, replace, statusBadge, table, timeEl } from "../dom.js";
import { can } from "../navigation.js";
import { openInstallDialog } from "./install-dialog.js";

const STATUSES = ["REGISTERED", "INSTALLING", "ENABLED", "DISABLED", "UPDATING", "REMOVING"];
const PAGE = 25;

export function render(container, _params, signal) {
  document.title = "Modules · modhub";
  const query = new URLSearchParams(location.search);
  const filters = {
    q: query.get("q") || "",
    status: STATUSES.includes(query.get("status")) ? query.get("status") : "",
    offset: Math.max(0, Number(query.get("offset")) || 0),
  };

  const search = h("input", {
    id: "module-search",
    type: "search",
    placeholder: "Name or description",
    value: filters.q,
    autocomplete: "off",
  });
  const status = h(
    "select",
    { id: "module-status" },
    h("option", { value: "", text: "All statuses" }),
    STATUSES.map((s) => h("option", { value: s, text: s.charAt(0) + s.slice(1).toLowerCase() })),
  );
  status.value = filters.status;
  const results = h("div", { class: "results", "aria-live": "polite", "aria-busy": "true" });

  let timer = null;
  let sequence = 0;
  async function load() {
    const mine = ++sequence;
    const params = new URLSearchParams();
    if (filters.q) params.set("q", filters.q);
    if (filters.status) params.set("status", filters.status);
    if (filters.offset) params.set("offset", String(filters.offset));
    const search = params.toString();
    history.replaceState(null, "", `/modules${search ? `?${search}` : ""}`);
    results.setAttribute("aria-busy", "true");
    try {
      const page = await get("/modules", {
        q: filters.q,
        status: filters.status,
        limit: PAGE,
        offset: filters.offset,
      });
      if (mine !== sequence || signal.aborted) return;
      replace(results, listing(page));
    } catch (error) {
      if (mine === sequence) replace(results, errorBox(error, "Could not load the modules"));
    } finally {
      if (mine === sequence) results.setAttribute("aria-busy", "false");
    }
  }

  function listing(page) {
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.items.length;
    const filtered = filters.q || filters.status;
    const rows = page.items.map((m) => [
      h(
        "div",
        { class: "module-name" },
        h("a", { href: `/modules/${encodeURIComponent(m.name)}`, text: m.displayName }),
        h("code", { text: m.name }),
      ),
      h("code", { text: m.version }),
      statusBadge(m.status),
      h("span", { class: "muted clamp", text: m.description || "" }),
      timeEl(m.updatedAt),
    ]);
    const pager = h(
      "div",
      { class: "pager" },
      h("span", { class: "muted", text: page.total ? `${first}–${last} of ${page.total}` : "" }),
      page.offset > 0
        ? h("button", { type: "button", class: "secondary", text: "Previous", onClick: () => go(-PAGE) })
        : null,
      last < page.total
        ? h("button", { type: "button", class: "secondary", text: "Next", onClick: () => go(PAGE) })
        : null,
    );
    return [
      table(["Module", "Version", "Status", "Description", "Updated"], rows, {
        caption: "Modules",
        empty: filtered ? "No module matches these filters." : "No modules yet: install a bundle to begin.",
      }),
      pager,
    ];
  }

  function go(delta) {
    filters.offset = Math.max(0, filters.offset + delta);
    load();
  }

  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      filters.q = search.value.trim();
      filters.offset = 0;
      load();
    }, 250);
  });
  status.addEventListener("change", () => {
    filters.status = status.value;
    filters.offset = 0;
    load();
  });

  const install = can("modules:admin")
    ? h("button", {
        type: "button",
        class: "primary",
        text: "Install bundle…",
        onClick: () => openInstallDialog({ onInstalled: load }),
      })
    : null;

  replace(
    container,
    h(
      "header",
      { class: "page-header" },
      h(
        "div",
        {},
        h("h1", { text: "Modules" }),
        h("p", { class: "muted", text: "Every registered module, its version and status." }),
      ),
      install,
    ),
    h(
      "form",
      { class: "filters", role: "search", onSubmit: (event) => event.preventDefault() },
      h("div", { class: "field grow" }, h("label", { for: "module-search", text: "Search" }), search),
      h("div", { class: "field" }, h("label", { for: "module-status", text: "Status" }), status),
    ),
    h("div", { class: "card flush" }, results),
  );
  load();
  return () => clearTimeout(timer);
}
