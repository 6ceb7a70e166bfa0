// Modal dialogs on the native <dialog> element: confirm a plan, show progress, show errors.

import { errorBox, h, replace, uid } from "./dom.js";

/**
 * Open a modal dialog. `actions`: [{label, value, kind}] buttons that close it with their
 * value; Escape or "Cancel" closes it with null. Returns {element, body, result, close}.
 */
export function openDialog({
  title,
  body = [],
  actions = [],
  cancel = "Cancel",
  className = "",
  dismissable = true,
}) {
  const titleId = uid("dialog-title");
  const content = h("div", { class: "dialog-body" }, body);
  const buttons = h("div", { class: "dialog-actions" });
  const dialog = h(
    "dialog",
    { class: `dialog ${className}`, "aria-labelledby": titleId },
    h("h2", { id: titleId, text: title }),
    content,
    buttons,
  );
  let settle;
  const result = new Promise((resolve) => {
    settle = resolve;
  });
  const close = (value = null) => {
    settle(value);
    if (dialog.open) dialog.close();
    dialog.remove();
  };
  const setActions = (list, cancelLabel = cancel) => {
    replace(
      buttons,
      cancelLabel
        ? h("button", { type: "button", class: "secondary", text: cancelLabel, onClick: () => close(null) })
        : null,
      list.map((action) =>
        h("button", {
          type: "button",
          class: action.kind || "primary",
          text: action.label,
          onClick: () => close(action.value),
        }),
      ),
    );
  };
  setActions(actions);
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault(); // Escape: close through `close` so that `result` settles
    if (dismissable) close(null);
  });
  document.body.append(dialog);
  dialog.showModal();
  return { element: dialog, body: content, result, close, setActions };
}

function arrow(step) {
  return step.to === null ? `${step.from} → removed` : `${step.from} → ${step.to}`;
}

/** The steps of a dry-run plan as an ordered list. */
export function planList(plan) {
  return h(
    "ol",
    { class: "plan", "aria-label": "Planned changes" },
    plan.steps.map((step) =>
      h(
        "li",
        {},
        h("span", { class: "plan-module", text: step.module }),
        " ",
        h("span", { text: arrow(step) }),
      ),
    ),
  );
}

/**
 * Show a dry-run plan and ask to go on. `others` lists the other modules it changes.
 * Resolves true when confirmed.
 */
export async function confirmPlan({ title, intro, plan, module, confirmLabel, danger = false }) {
  const others = [...new Set(plan.steps.map((s) => s.module).filter((name) => name !== module))];
  const body = [
    h("p", { text: intro }),
    others.length
      ? h(
          "div",
          { class: "alert warning", role: "note" },
          h("strong", { text: "This also changes other modules: " }),
          others.join(", "),
        )
      : null,
    planList(plan),
  ];
  const dialog = openDialog({
    title,
    body,
    actions: [{ label: confirmLabel, value: true, kind: danger ? "danger" : "primary" }],
    className: "plan-dialog",
  });
  return (await dialog.result) === true;
}

/** Show an error in a dialog with an OK button. */
export async function showError(error, title) {
  const dialog = openDialog({ title: title || "Something went wrong", body: errorBox(error), cancel: "OK" });
  await dialog.result;
}

/**
 * Open a progress dialog for a long operation. Returns {update(operation), done()}.
 * It shows the operation's steps as the server reports them.
 */
export function progressDialog(title) {
  let dialog = null;
  const steps = h("ol", { class: "steps", "aria-live": "polite" });
  return {
    update(operation) {
      if (!dialog) {
        dialog = openDialog({
          title,
          body: [h("progress", { "aria-label": title }), steps],
          cancel: null,
          dismissable: false,
        });
      }
      replace(
        steps,
        (operation.steps || []).map((step) =>
          h("li", { class: `step-${step.status}` }, `${step.name}: `, h("strong", { text: step.status })),
        ),
      );
    },
    done() {
      if (dialog) dialog.close();
    },
  };
}
