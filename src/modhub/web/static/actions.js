// Lifecycle actions: ask the server for the dry-run plan, show it, ask before cascading,
// then run the change and follow its operation. Each resolves true when something changed,
// false when the user cancelled, and throws ApiError when the server refused.

import { ApiError, lifecycle, request } from "./api.js";
import { confirmPlan, openDialog, progressDialog } from "./dialogs.js";
import { h } from "./dom.js";

const VERBS = {
  ENABLED: { label: "Enable", doing: "Enabling" },
  DISABLED: { label: "Disable", doing: "Disabling" },
};

function modulePath(name, suffix = "") {
  return `/modules/${encodeURIComponent(name)}${suffix}`;
}

async function run(title, method, path, options) {
  const progress = progressDialog(title);
  try {
    return await lifecycle(method, path, { ...options, onOperation: (op) => progress.update(op) });
  } finally {
    progress.done();
  }
}

async function statusPlan(name, status, cascade) {
  const { data } = await request("PUT", modulePath(name, "/status"), {
    query: { dryRun: true, cascade },
    body: { status },
  });
  return data;
}

function blockedByOthers(error) {
  const problem = error.problem || {};
  return (
    error instanceof ApiError &&
    error.status === 409 &&
    ((problem.unmet || []).length > 0 || (problem.dependents || []).length > 0)
  );
}

/**
 * Enable or disable `name`. `confirm`: "always" shows the plan and asks first; "cascade"
 * asks only when the plan changes other modules.
 */
export async function setStatus(name, status, { confirm = "always" } = {}) {
  const verb = VERBS[status];
  let cascade = false;
  let plan;
  try {
    plan = await statusPlan(name, status, false);
  } catch (error) {
    if (!blockedByOthers(error)) throw error;
    // Dependencies to enable first, or dependents to disable first: the cascading plan.
    plan = await statusPlan(name, status, true);
    cascade = true;
  }
  if (!plan.steps.length) return false;
  const others = plan.steps.some((step) => step.module !== name);
  if (confirm === "always" || others) {
    const ok = await confirmPlan({
      title: `${verb.label} ${name}?`,
      intro: others
        ? `${verb.doing} ${name} needs this plan (a dry run: nothing has changed yet).`
        : "A dry run: this is what will change.",
      plan,
      module: name,
      confirmLabel: others ? `${verb.label} ${plan.steps.length} modules` : verb.label,
      danger: status === "DISABLED",
    });
    if (!ok) return false;
  }
  await run(`${verb.doing} ${name}…`, "PUT", modulePath(name, "/status"), {
    query: { cascade },
    body: { status },
  });
  return true;
}

/** Switch `name` to another registered `version`. */
export async function upgrade(name, from, version) {
  const dialog = openDialog({
    title: `Switch ${name} to ${version}?`,
    body: h("p", {
      text: `${name} goes from ${from} to ${version}. If the new version fails to start, ${from} stays active.`,
    }),
    actions: [{ label: `Switch to ${version}`, value: true }],
  });
  if ((await dialog.result) !== true) return false;
  await run(`Switching ${name} to ${version}…`, "POST", modulePath(name, "/upgrade"), { body: { version } });
  return true;
}

/** Return `name` to the version it had before its last upgrade. */
export async function rollback(name, from, previous) {
  const dialog = openDialog({
    title: `Roll back ${name}?`,
    body: h("p", { text: `${name} goes back from ${from} to ${previous}.` }),
    actions: [{ label: `Roll back to ${previous}`, value: true, kind: "danger" }],
  });
  if ((await dialog.result) !== true) return false;
  await run(`Rolling back ${name}…`, "POST", modulePath(name, "/rollback"), {});
  return true;
}

/** Remove `name` with every version, its config and its files. */
export async function remove(name) {
  const { data: plan } = await request("DELETE", modulePath(name), { query: { dryRun: true } });
  const ok = await confirmPlan({
    title: `Remove ${name}?`,
    intro:
      `${name} is removed with every version, its configuration, its files and its stored ` +
      `data (${plan.data ? plan.data.keys : 0} keys). This cannot be undone.`,
    plan,
    module: name,
    confirmLabel: "Remove",
    danger: true,
  });
  if (!ok) return false;
  await run(`Removing ${name}…`, "DELETE", modulePath(name), {});
  return true;
}
