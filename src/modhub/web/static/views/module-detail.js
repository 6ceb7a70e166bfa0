// One module: actions, configuration, dependencies and dependents, versions, jobs and
// their runs, audit history and the manifest.

import * as actions from "../actions.js";
import { ApiError, get, request } from "../api.js";
import { showError } from "../dialogs.js";
import { errorBox, h, replace, section, statusBadge, table, timeEl, toast } from "../dom.js";
import { can, refreshNavigation } from "../navigation.js";
import { navigate } from "../router.js";
import { renderConfigForm } from "./config-form.js";
import { eventsSection } from "./module-events.js";

const BUSY = ["INSTALLING", "UPDATING", "REMOVING"];

export async function render(container, { name }, signal) {
  document.title = `${name} · modhub`;
  let timer = null;

  async function load() {
    clearTimeout(timer);
    let module;
    try {
      module = await get(`/modules/${encodeURIComponent(name)}`);
    } catch (error) {
      if (signal.aborted) return;
      const missing = error instanceof ApiError && error.status === 404;
      replace(
        container,
        backLink(),
        missing
          ? h(
              "div",
              { class: "alert error", role: "alert" },
              h("strong", { text: "No such module" }),
              h("p", { text: `There is no module named ${name}.` }),
            )
          : errorBox(error, "Could not load the module"),
      );
      return;
    }
    if (signal.aborted) return;
    document.title = `${module.displayName} · modhub`;
    replace(container, view(module, { reload: load }));
    if (BUSY.includes(module.status)) timer = setTimeout(load, 1500);
  }

  await load();
  return () => clearTimeout(timer);
}

function backLink() {
  return h("a", { class: "back", href: "/modules", text: "← Modules" });
}

function view(module, { reload }) {
  const jobs = h("div", { "aria-busy": "true" }, h("p", { class: "muted", text: "Loading…" }));
  const runs = h("div", { "aria-busy": "true" }, h("p", { class: "muted", text: "Loading…" }));
  const audit = h("div", { "aria-busy": "true" }, h("p", { class: "muted", text: "Loading…" }));
  const config = h("div");
  fill(jobs, () => jobsTable(module, () => fill(runs, () => runsTable(module.name))));
  fill(runs, () => runsTable(module.name));
  fill(audit, () => auditTable(module.name));
  renderConfigForm(config, module, {
    readOnly: !can("modules:write"),
    onSaved: () => fill(audit, () => auditTable(module.name)),
  });

  return [
    backLink(),
    header(module, reload),
    module.lastError
      ? h(
          "div",
          { class: "alert error", role: "alert" },
          h("strong", { text: "Last error" }),
          h("p", { text: module.lastError }),
        )
      : null,
    h(
      "div",
      { class: "detail-grid" },
      h("div", { class: "stack" }, section("Configuration", config), dependencies(module)),
      h("div", { class: "stack" }, overview(module), versions(module)),
    ),
    section("Jobs", jobs, h("h3", { text: "Recent runs" }), runs),
    eventsSection(module),
    section("Audit history", audit),
    manifest(module),
  ];
}

async function fill(element, build) {
  try {
    replace(element, await build());
  } catch (error) {
    replace(element, errorBox(error));
  }
  element.setAttribute("aria-busy", "false");
}

function header(module, reload) {
  const busy = BUSY.includes(module.status);
  const act = (label, kind, run) =>
    h("button", {
      type: "button",
      class: kind,
      text: label,
      disabled: busy,
      onClick: async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        try {
          const changed = await run();
          if (changed === "removed") {
            await refreshNavigation();
            toast(`Removed ${module.name}`);
            navigate("/modules");
            return;
          }
          if (changed) {
            await refreshNavigation();
            await reload();
            return;
          }
        } catch (error) {
          await showError(error, `Could not ${label.toLowerCase()} ${module.name}`);
          await refreshNavigation().catch(() => {});
          await reload();
          return;
        }
        button.disabled = false;
      },
    });

  const buttons = [];
  if (can("modules:write")) {
    if (module.status === "ENABLED")
      buttons.push(act("Disable", "secondary", () => actions.setStatus(module.name, "DISABLED")));
    if (module.status === "REGISTERED") {
      buttons.push(act("Install", "secondary", () => actions.setStatus(module.name, "DISABLED")));
    }
    if (module.status === "DISABLED" || module.status === "REGISTERED") {
      buttons.push(act("Enable", "primary", () => actions.setStatus(module.name, "ENABLED")));
    }
  }
  if (can("modules:admin")) {
    const others = module.versions.filter((v) => !v.active).map((v) => v.version);
    if (others.length) {
      const select = h(
        "select",
        { id: "upgrade-version", "aria-label": "Version to switch to" },
        others.map((version) => h("option", { value: version, text: version })),
      );
      buttons.push(
        h(
          "span",
          { class: "inline-control" },
          select,
          act("Switch version", "secondary", () =>
            actions.upgrade(module.name, module.version, select.value),
          ),
        ),
      );
    }
    if (module.previousVersion) {
      buttons.push(
        act("Roll back", "secondary", () =>
          actions.rollback(module.name, module.version, module.previousVersion),
        ),
      );
    }
    buttons.push(
      act("Remove", "danger", async () => ((await actions.remove(module.name)) ? "removed" : false)),
    );
  }

  return h(
    "header",
    { class: "page-header module-header" },
    h(
      "div",
      {},
      h("h1", {}, module.displayName, " ", statusBadge(module.status)),
      h(
        "p",
        { class: "muted" },
        h("code", { text: module.name }),
        " · version ",
        h("code", { text: module.version }),
        module.description ? ` · ${module.description}` : "",
      ),
    ),
    h("div", { class: "actions", role: "group", "aria-label": "Module actions" }, buttons),
  );
}

function definition(items) {
  return h(
    "dl",
    { class: "facts" },
    items
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]),
  );
}

function overview(module) {
  const caps = module.manifest.capabilities || {};
  const routes = (caps.api && caps.api.routes) || [];
  const pages = (caps.ui && caps.ui.pages) || [];
  const list = (items, render) =>
    items.length
      ? h(
          "ul",
          { class: "plain" },
          items.map((item) => h("li", {}, render(item))),
        )
      : "—";
  return section(
    "Overview",
    definition([
      ["Author", module.author],
      ["License", module.license],
      ["Storage", storage(module.storage)],
      ["Registered", timeEl(module.createdAt)],
      ["Updated", timeEl(module.updatedAt)],
      [
        "API routes",
        list(routes, (r) => h("code", { text: `${r.method} /api/v1/m/${module.name}${r.path}` })),
      ],
      ["UI pages", list(pages, (p) => [p.title, " ", h("code", { text: p.path })])],
      [
        "Permissions",
        (module.manifest.permissions || []).length
          ? module.manifest.permissions.map((p) => h("code", { class: "chip", text: p }))
          : "—",
      ],
    ]),
  );
}

/** "N keys, X of Y MB": what the module keeps in its store, and its limit. */
function storage(usage) {
  if (!usage) return null;
  const mb = (bytes) =>
    bytes > 0 && bytes < 10486
      ? "< 0.01"
      : (bytes / 1048576).toLocaleString("en", { maximumFractionDigits: 2 });
  const keys = `${usage.keys} ${usage.keys === 1 ? "key" : "keys"}`;
  return h("span", {
    class: "storage",
    text: `${keys}, ${mb(usage.bytes)} of ${mb(usage.limitBytes)} MB`,
  });
}

function dependencies(module) {
  const deps = module.dependencies.map((dep) => [
    h("a", { href: `/modules/${encodeURIComponent(dep.name)}`, text: dep.name }),
    h("code", { text: dep.range }),
    dep.installedVersion ? h("code", { text: dep.installedVersion }) : "not registered",
    dep.status ? statusBadge(dep.status) : "—",
    dep.satisfied
      ? h(
          "span",
          { class: "sat ok", dataset: { satisfied: "true" } },
          h("span", { "aria-hidden": "true", text: "✓ " }),
          "satisfied",
        )
      : h(
          "span",
          { class: "sat bad", dataset: { satisfied: "false" } },
          h("span", { "aria-hidden": "true", text: "✗ " }),
          "unsatisfied",
        ),
  ]);
  const dependents = module.dependents.map((dep) => [
    h("a", { href: `/modules/${encodeURIComponent(dep.name)}`, text: dep.name }),
    h("code", { text: dep.range }),
    h("code", { text: dep.version }),
    statusBadge(dep.status),
  ]);
  return section(
    "Dependencies",
    table(["Module", "Range", "Installed", "Status", ""], deps, {
      caption: "Dependencies",
      empty: "Depends on no other module.",
    }),
    h("h3", { text: "Dependents" }),
    table(["Module", "Needs", "Version", "Status"], dependents, {
      caption: "Dependents",
      empty: "No module depends on this one.",
    }),
  );
}

function versions(module) {
  const rows = module.versions.map((v) => [
    h("code", { text: v.version }),
    timeEl(v.registeredAt),
    v.active
      ? h("span", { class: "badge status-enabled", text: "active" })
      : v.version === module.previousVersion
        ? "previous"
        : "",
  ]);
  return section("Versions", table(["Version", "Registered", ""], rows, { caption: "Versions" }));
}

async function jobsTable(module, onRun) {
  const jobs = await get(`/modules/${encodeURIComponent(module.name)}/jobs`);
  const rows = jobs.map((job) => [
    h("code", { text: job.name }),
    h("code", { text: job.schedule || "—" }),
    job.nextRuns && job.nextRuns.length ? timeEl(job.nextRuns[0]) : "not scheduled",
    can("modules:write") && module.status === "ENABLED"
      ? h("button", {
          type: "button",
          class: "secondary small",
          text: "Run now",
          "aria-label": `Run ${job.name} now`,
          onClick: async () => {
            try {
              await request(
                "POST",
                `/modules/${encodeURIComponent(module.name)}/jobs/${encodeURIComponent(job.name)}/run`,
              );
              toast(`Queued a run of ${job.name}`);
              setTimeout(onRun, 1000);
            } catch (error) {
              await showError(error, `Could not run ${job.name}`);
            }
          },
        })
      : "",
  ]);
  return table(["Job", "Schedule", "Next run", ""], rows, {
    caption: "Jobs",
    empty: "This module has no jobs.",
  });
}

async function runsTable(name) {
  const page = await get("/jobs/runs", { module: name, limit: 10 });
  const rows = page.items.map((run) => [
    String(run.id),
    h("code", { text: run.job }),
    run.trigger,
    statusBadge(run.status),
    timeEl(run.scheduledAt),
    timeEl(run.finishedAt),
    run.error ? h("span", { class: "muted clamp", text: run.error }) : "",
  ]);
  return table(["#", "Job", "Trigger", "Status", "Scheduled", "Finished", "Error"], rows, {
    caption: "Recent job runs",
    empty: "No runs yet.",
  });
}

function auditDetail(entry) {
  const detail = entry.detail || {};
  if ("from" in detail && "to" in detail) return `${detail.from} → ${detail.to}`;
  return Object.entries(detail)
    .map(
      ([key, value]) =>
        `${key}: ${Array.isArray(value) ? value.join(", ") : typeof value === "object" ? JSON.stringify(value) : value}`,
    )
    .join("; ");
}

async function auditTable(name) {
  const page = await get("/audit", { target: name, limit: 20 });
  const rows = page.items.map((entry) => [
    timeEl(entry.at),
    entry.actor,
    h("code", { text: entry.action }),
    auditDetail(entry),
  ]);
  return table(["When", "Who", "Action", "Detail"], rows, {
    caption: "Audit history",
    empty: "No audit entries.",
  });
}

function manifest(module) {
  return h(
    "details",
    { class: "card manifest" },
    h("summary", {}, "Manifest ", h("code", { text: "module.json" })),
    h("pre", { tabindex: "0", text: JSON.stringify(module.manifest, null, 2) }),
  );
}
