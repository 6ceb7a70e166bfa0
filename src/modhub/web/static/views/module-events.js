// A module's events on its page: what it emits, what it subscribes to, and its latest
// deliveries (GET /api/v1/events?subscriber=NAME), with a "Deliver again" button for dead ones.

import { get, request } from "../api.js";
import { showError } from "../dialogs.js";
import { errorBox, h, replace, section, statusBadge, table, timeEl, toast } from "../dom.js";
import { can } from "../navigation.js";

export function eventsSection(module) {
  const events = (module.manifest.capabilities || {}).events || {};
  const emits = events.emits || [];
  const subscribes = events.subscribes || [];
  const deliveries = h("div", { "aria-busy": "true" }, h("p", { class: "muted", text: "Loading…" }));
  const load = async () => {
    try {
      replace(deliveries, await deliveriesTable(module.name, load));
    } catch (error) {
      replace(deliveries, errorBox(error));
    }
    deliveries.setAttribute("aria-busy", "false");
  };
  load();
  return section(
    "Events",
    table(
      ["Emits", "Description"],
      emits.map((e) => [h("code", { text: e.name }), e.description || ""]),
      { caption: "Events this module emits", empty: "This module emits no events." },
    ),
    table(
      ["Subscribes to", "Handler", "Retries"],
      subscribes.map((s) => [
        h("code", { text: s.event }),
        h("code", { text: s.handler }),
        String(s.retries ?? 3),
      ]),
      { caption: "Events this module subscribes to", empty: "This module subscribes to no events." },
    ),
    h("h3", { text: "Recent deliveries" }),
    deliveries,
  );
}

async function deliveriesTable(name, reload) {
  const page = await get("/events", { subscriber: name, limit: 10 });
  const rows = page.items.map((event) => {
    const mine = event.deliveries.find((d) => d.subscriber === name) || {};
    return [
      String(event.id),
      h("code", { text: `${event.source}/${event.name}` }),
      timeEl(event.emittedAt),
      statusBadge(mine.status),
      String(mine.attempt ?? 0),
      mine.lastError ? h("span", { class: "muted clamp", text: mine.lastError }) : "",
      can("modules:write") && (mine.status === "dead" || mine.status === "delivered")
        ? h("button", {
            type: "button",
            class: "secondary small",
            text: "Deliver again",
            "aria-label": `Deliver event ${event.id} again`,
            onClick: async () => {
              try {
                await request("POST", `/events/${event.id}/redeliver`, {
                  query: { subscriber: name },
                });
                toast(`Event ${event.id} will be delivered again`);
                setTimeout(reload, 1000);
              } catch (error) {
                await showError(error, `Could not deliver event ${event.id} again`);
              }
            },
          })
        : "",
    ];
  });
  return table(["#", "Event", "Emitted", "Status", "Attempts", "Last error", ""], rows, {
    caption: "Recent deliveries",
    empty: "No deliveries yet.",
  });
}
