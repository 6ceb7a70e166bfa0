// The host of a module's page (/m/<module><path>): the page runs in a sandboxed frame
// (an opaque origin, see page-bridge.js), which imports its component only now and mounts
// it with a small context; it is unmounted when the user navigates away.

import { h, replace } from "../dom.js";
import { state } from "../navigation.js";
import { connectPage } from "../page-bridge.js";

export async function render(container, { module, path }) {
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
  // No allow-same-origin: the frame is an opaque origin, whatever its document says.
  const frame = h("iframe", {
    class: "module-frame",
    src: "/ui/page-frame",
    sandbox: "allow-scripts allow-forms",
    title: entry.title,
    referrerpolicy: "same-origin",
    dataset: { module: entry.module },
  });
  const close = connectPage(frame, entry, state.user);
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
    h("div", { class: "card module-page" }, frame),
  );
  return close;
}
