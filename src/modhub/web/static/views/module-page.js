// The host of a module's page (/m/<module><path>): import its component only now,
// mount it with a small context, unmount it when the user navigates away.

import { moduleFetch } from "../api.js";
import { errorBox, h, replace } from "../dom.js";
import { state } from "../navigation.js";

export async function render(container, { module, path }, signal) {
  const pagePath = path || "/";
  const entry = state.navigation.find((e) => e.module === module && e.path === pagePath);
  if (!entry) {
    document.title = "Page not available · modhub";
    replace(
      container,
      h("h1", { text: "Page not available" }),
      h(
        "p",
        {},
        `No enabled module offers ${module}${pagePath} to you. `,
        h("a", { href: "/modules", text: "Back to the modules" }),
      ),
    );
    return null;
  }
  document.title = `${entry.title} · modhub`;
  const mountPoint = h(
    "div",
    { class: "module-mount", dataset: { module: entry.module } },
    h("p", { class: "muted", text: "Loading…" }),
  );
  replace(
    container,
    h(
      "header",
      { class: "page-header" },
      h(
        "div",
        {},
        h("h1", { text: entry.title }),
        h(
          "p",
          { class: "muted" },
          "A page of ",
          h("a", { href: `/modules/${encodeURIComponent(entry.module)}`, text: entry.module }),
        ),
      ),
    ),
    h("div", { class: "card module-page" }, mountPoint),
  );

  let component;
  try {
    component = await import(entry.componentUrl);
  } catch (error) {
    replace(mountPoint, errorBox(error, `Could not load the page of ${entry.module}`));
    return null;
  }
  if (signal.aborted) return null;
  if (typeof component.mount !== "function") {
    replace(
      mountPoint,
      errorBox(new Error(`${entry.componentUrl} exports no mount()`), "Not a page component"),
    );
    return null;
  }
  const context = Object.freeze({
    apiBase: entry.apiBase,
    fetch: moduleFetch(entry.apiBase),
    user: state.user
      ? { username: state.user.username, role: state.user.role, permissions: [...state.user.permissions] }
      : null,
    module: entry.module,
  });
  try {
    await component.mount(mountPoint, context);
  } catch (error) {
    replace(mountPoint, errorBox(error, `The page of ${entry.module} failed`));
    return null;
  }
  return async () => {
    if (typeof component.unmount === "function") await component.unmount(mountPoint);
  };
}
