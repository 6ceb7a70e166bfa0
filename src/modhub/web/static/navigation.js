// Who is logged in, and the sidebar: the console's own links, then the pages of the
// enabled modules the user may see (GET /ui/navigation, already filtered and ordered).

import { get } from "./api.js";
import { h, replace } from "./dom.js";

export const state = { user: null, navigation: [] };

/** The console route of a module page. */
export function pageRoute(entry) {
  return `/m/${encodeURIComponent(entry.module)}${entry.path}`;
}

/** Return whether the user holds `permission` (directly, by `scope:*` or `*`). */
export function can(permission) {
  const held = state.user ? state.user.permissions : [];
  return held.includes("*") || held.includes(permission) || held.includes(`${permission.split(":")[0]}:*`);
}

/** Load the user (GET /auth/me). */
export async function loadUser() {
  state.user = await get("/auth/me");
  return state.user;
}

/** Fetch the navigation again and redraw the sidebar (after enable, disable, upgrade…). */
export async function refreshNavigation() {
  state.navigation = await get("/ui/navigation");
  renderSidebar();
  return state.navigation;
}

/** Forget the user and the navigation (on logout). */
export function resetState() {
  state.user = null;
  state.navigation = [];
  renderSidebar();
}

function link(href, label, icon, extra = {}) {
  return h(
    "li",
    {},
    h(
      "a",
      { href, ...extra },
      h("span", { class: "nav-icon", "aria-hidden": "true", text: icon }),
      h("span", { class: "nav-label", text: label }),
    ),
  );
}

/** Redraw the sidebar and the user box from `state`. */
export function renderSidebar() {
  const sidebar = document.getElementById("sidebar");
  const user = document.getElementById("user");
  const logout = document.getElementById("logout");
  const signedIn = Boolean(state.user);
  sidebar.hidden = !signedIn;
  logout.hidden = !signedIn;
  replace(
    user,
    signedIn
      ? [
          h("span", { class: "user-name", text: state.user.username }),
          h("span", { class: "user-role", text: state.user.role }),
        ]
      : [],
  );
  if (!signedIn) {
    sidebar.replaceChildren();
    return;
  }
  replace(
    sidebar,
    h("h2", { class: "nav-heading", text: "Console" }),
    h("ul", {}, link("/modules", "Modules", "▦"), link("/cluster", "Cluster", "◎")),
    h("h2", { class: "nav-heading", id: "module-pages-heading", text: "Module pages" }),
    state.navigation.length
      ? h(
          "ul",
          { "aria-labelledby": "module-pages-heading", id: "module-nav" },
          state.navigation.map((entry) =>
            link(pageRoute(entry), entry.label, entry.label.slice(0, 1).toUpperCase(), {
              title: entry.title,
              dataset: { module: entry.module },
            }),
          ),
        )
      : h("p", { class: "nav-empty", text: "No module pages yet." }),
  );
  markCurrent(location.pathname);
}

/** Mark the sidebar link of `path` with aria-current. */
export function markCurrent(path) {
  for (const anchor of document.querySelectorAll("#sidebar a")) {
    const target = new URL(anchor.href).pathname;
    const active =
      target === path || (target === "/modules" && (path === "/" || path.startsWith("/modules/")));
    if (active) anchor.setAttribute("aria-current", "page");
    else anchor.removeAttribute("aria-current");
  }
}
