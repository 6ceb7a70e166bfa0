// The console: routes, the session, and the sidebar. Views live in ./views/.

import { onUnauthorized, session } from "./api.js";
import { h, replace } from "./dom.js";
import { loadUser, markCurrent, refreshNavigation, renderSidebar, resetState } from "./navigation.js";
import { navigate, onNavigate, start } from "./router.js";
import * as cluster from "./views/cluster.js";
import * as login from "./views/login.js";
import * as moduleDetail from "./views/module-detail.js";
import * as modulePage from "./views/module-page.js";
import * as modules from "./views/modules.js";

function notFound(container) {
  document.title = "Not found · modhub";
  replace(
    container,
    h("h1", { text: "Not found" }),
    h("p", {}, "There is nothing at this address. ", h("a", { href: "/modules", text: "Go to the modules" })),
  );
}

const ROUTES = [
  [/^\/login$/, login.render],
  [/^\/(?:modules)?$/, modules.render],
  [/^\/modules\/(?<name>[^/]+)$/, moduleDetail.render],
  [/^\/m\/(?<module>[^/]+)(?<path>\/.*)?$/, modulePage.render],
  [/^\/cluster$/, cluster.render],
  [/.*/, notFound],
];

/** Send whoever has no token to the login page, and whoever has one away from it. */
function guard(target) {
  const path = target.split("?")[0];
  if (!session.token && path !== "/login") return `/login?next=${encodeURIComponent(target)}`;
  if (session.token && path === "/login") return "/modules";
  return null;
}

function logout() {
  session.clear();
  resetState();
  navigate("/login");
}

onUnauthorized(() => {
  resetState();
  if (location.pathname !== "/login") {
    navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
  }
});

async function main() {
  document.getElementById("logout").addEventListener("click", logout);
  onNavigate(markCurrent);
  if (session.token) {
    try {
      await loadUser();
      await refreshNavigation();
    } catch {
      // a 401 already sent us to the login page; anything else shows on the first view
    }
  }
  renderSidebar();
  await start(document.getElementById("main"), ROUTES, guard);
}

main();
