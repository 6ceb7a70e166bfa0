// A small history router. Routes are [pattern, view]; a pattern is a RegExp whose named
// groups become the view's params. A view is `render(container, params, signal)` and may
// return a cleanup function, called when the user navigates away.

let routes = [];
let outlet = null;
let guard = () => null;
let current = { cleanup: null, controller: null };
const listeners = new Set();

/** Start routing into `element`; `beforeEach(path)` may return another path to go to. */
export function start(element, table, beforeEach) {
  routes = table;
  outlet = element;
  guard = beforeEach || guard;
  window.addEventListener("popstate", () => render());
  document.addEventListener("click", interceptLinks);
  return render();
}

/** Go to `path` (pushState, or replaceState with `{replace: true}`) and render it. */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  return render();
}

/** Render the current location again (e.g. after the navigation changed). */
export function reload() {
  return render();
}

/** Call `listener(path)` after every navigation. */
export function onNavigate(listener) {
  listeners.add(listener);
}

function interceptLinks(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const target = new URL(link.href, location.href);
  if (target.origin !== location.origin || target.pathname.startsWith("/api/")) return;
  if (target.hash && target.pathname === location.pathname) return; // in-page anchor
  event.preventDefault();
  if (target.pathname + target.search !== location.pathname + location.search) {
    navigate(target.pathname + target.search);
  }
}

async function render() {
  if (!outlet) return; // not started yet: start() renders the location it finds
  const path = location.pathname;
  const redirect = guard(path + location.search);
  if (redirect) {
    history.replaceState(null, "", redirect);
    return render();
  }
  if (current.controller) current.controller.abort();
  if (current.cleanup) {
    try {
      await current.cleanup();
    } catch (error) {
      console.error("cleanup failed", error);
    }
  }
  const controller = new AbortController();
  current = { cleanup: null, controller };
  const container = document.createElement("div");
  container.className = "view";
  outlet.replaceChildren(container);
  for (const listener of listeners) listener(path);
  for (const [pattern, view] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const params = Object.fromEntries(
      Object.entries(match.groups || {}).map(([k, v]) => [k, v === undefined ? v : decodeURIComponent(v)]),
    );
    const cleanup = await view(container, params, controller.signal);
    if (controller.signal.aborted) {
      if (typeof cleanup === "function") await cleanup();
    } else {
      current.cleanup = typeof cleanup === "function" ? cleanup : null;
    }
    return;
  }
}
