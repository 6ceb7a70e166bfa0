// The cluster: every node sharing this database, its heartbeat and what it runs
// (GET /cluster/nodes), refreshed every few seconds while the page is open.

import { get } from "../api.js";
import { errorBox, h, replace, statusBadge, table, timeEl } from "../dom.js";

const REFRESH_MS = 5000;

function nodeCell(node) {
  return h(
    "div",
    { class: "node-id" },
    h("code", { text: node.id.slice(0, 12), title: node.id }),
    node.self ? h("span", { class: "muted", text: " (this node)" }) : null,
  );
}

function modulesCell(names) {
  if (!names.length) return h("span", { class: "muted", text: "none" });
  return h(
    "ul",
    { class: "node-modules" },
    names.map((name) => h("li", {}, h("code", { text: name }))),
  );
}

function rows(nodes) {
  return nodes.map((node) => [
    nodeCell(node),
    statusBadge(node.status),
    h("span", { text: `${node.host} (pid ${node.pid})` }),
    node.address ? h("code", { text: node.address }) : "—",
    h("code", { text: node.modhubVersion }),
    timeEl(node.startedAt),
    timeEl(node.lastHeartbeatAt),
    modulesCell(node.modulesMaterialized),
    String(node.liveWorkers),
    String(node.runsInFlight),
    node.lastError ? h("span", { class: "node-error", text: node.lastError }) : "—",
  ]);
}

export function render(container, _params, signal) {
  document.title = "Cluster · modhub";
  const results = h("div", { class: "results", "aria-live": "polite", "aria-busy": "true" });
  const summary = h("p", { class: "muted" });

  async function load() {
    try {
      const nodes = await get("/cluster/nodes");
      if (signal.aborted) return;
      const up = nodes.filter((node) => node.status === "up").length;
      summary.textContent = `${nodes.length} node(s), ${up} up. A node is gone once it has missed three heartbeats; its running job runs are then released.`;
      replace(
        results,
        table(
          [
            "Node",
            "Status",
            "Host",
            "Address",
            "Version",
            "Started",
            "Last heartbeat",
            "Modules materialized",
            "Live workers",
            "Runs in flight",
            "Last error",
          ],
          rows(nodes),
          { caption: "Nodes", empty: "No node has registered yet." },
        ),
      );
    } catch (error) {
      if (!signal.aborted) replace(results, errorBox(error, "Could not load the nodes"));
    } finally {
      results.setAttribute("aria-busy", "false");
    }
  }

  replace(
    container,
    h(
      "header",
      { class: "page-header" },
      h("div", {}, h("h1", { text: "Cluster" }), summary),
    ),
    h("div", { class: "card flush" }, results),
  );
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
