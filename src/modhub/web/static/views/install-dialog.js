// Install a module from a bundle file: upload with progress (POST /modules/bundles), then
// install it (PUT status DISABLED), install and enable it (ENABLED), or only register it.

import { setStatus } from "../actions.js";
import { uploadBundle } from "../api.js";
import { openDialog } from "../dialogs.js";
import { errorBox, h, replace } from "../dom.js";
import { refreshNavigation } from "../navigation.js";

const AFTER = [
  {
    value: "DISABLED",
    label: "Install it (disabled)",
    hint: "Creates its environment; enable it once configured.",
  },
  {
    value: "ENABLED",
    label: "Install and enable it",
    hint: "Its required configuration must have defaults.",
  },
  { value: "", label: "Only register it", hint: "Nothing is installed yet." },
];
const DONE = { DISABLED: "installed (disabled)", ENABLED: "installed and enabled", "": "registered" };

function size(bytes) {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** The version the upload registered: the newest of the module's versions. */
function newestVersion(module) {
  const sorted = [...module.versions].sort((a, b) => Date.parse(b.registeredAt) - Date.parse(a.registeredAt));
  return sorted.length ? sorted[0].version : module.version;
}

/** Open the dialog; `onInstalled(module)` runs after a bundle was registered or installed. */
export function openInstallDialog({ onInstalled }) {
  const file = h("input", {
    id: "bundle-file",
    name: "file",
    type: "file",
    accept: ".zip,.tar.gz,.tgz",
    required: true,
    "aria-describedby": "bundle-file-hint",
  });
  const choices = AFTER.map((choice, index) =>
    h(
      "label",
      { class: "choice" },
      h("input", { type: "radio", name: "after", value: choice.value, checked: index === 0 }),
      h("span", {}, h("strong", { text: choice.label }), h("small", { class: "muted", text: choice.hint })),
    ),
  );
  const bar = h("progress", {
    id: "bundle-progress",
    max: "100",
    value: "0",
    "aria-labelledby": "bundle-progress-text",
  });
  const status = h("span", { id: "bundle-progress-text", class: "muted", "aria-live": "polite" });
  const progress = h("div", { class: "upload-progress", hidden: true }, bar, status);
  const message = h("div", { class: "form-message" });
  const cancel = h("button", { type: "button", class: "secondary", text: "Cancel" });
  const upload = h("button", { type: "submit", class: "primary", text: "Upload" });
  const buttons = h("div", { class: "dialog-actions" }, cancel, upload);
  const form = h(
    "form",
    { id: "install-form", novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: "bundle-file", text: "Bundle file" }),
      file,
      h("p", {
        id: "bundle-file-hint",
        class: "hint",
        text: "A .zip or .tar.gz of a module folder: module.json and its code.",
      }),
    ),
    h("fieldset", { class: "choices" }, h("legend", { text: "After the upload" }), choices),
    progress,
    message,
    buttons,
  );
  const dialog = openDialog({
    title: "Install a bundle",
    body: form,
    cancel: null,
    className: "install-dialog",
  });
  cancel.addEventListener("click", () => dialog.close());

  function finish(...content) {
    replace(message, content);
    replace(
      buttons,
      h("button", { type: "button", class: "primary", text: "Close", onClick: () => dialog.close() }),
    );
    buttons.querySelector("button").focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) {
      replace(message, h("p", { class: "alert error", role: "alert", text: "Choose a bundle file first." }));
      return;
    }
    const after = form.elements.after.value;
    for (const control of form.querySelectorAll("input, button")) control.disabled = true;
    progress.hidden = false;
    replace(message);
    let module;
    try {
      module = await uploadBundle(chosen, (loaded, total) => {
        const value = Math.round((loaded / total) * 100);
        bar.value = value;
        status.textContent = `Uploading: ${value}% (${size(loaded)} of ${size(total)})`;
      });
    } catch (error) {
      replace(message, errorBox(error, "The bundle was refused"));
      for (const control of form.querySelectorAll("input, button")) control.disabled = false;
      return;
    }
    const uploaded = newestVersion(module);
    bar.value = 100;
    status.textContent = `Uploaded: 100% (${size(chosen.size)}). Registered ${module.name} ${uploaded}.`;
    onInstalled(module);
    const link = h("a", {
      href: `/modules/${encodeURIComponent(module.name)}`,
      text: `Open ${module.name}`,
      onClick: () => dialog.close(),
    });
    if (uploaded !== module.version) {
      // A new version of a module we already have: it stays on its active version.
      finish(
        h(
          "p",
          { class: "alert success", role: "status" },
          `${module.name} ${uploaded} is registered next to the active ${module.version}; switch to it on the module's page. `,
          link,
        ),
      );
      return;
    }
    let outcome = "";
    if (after) {
      try {
        outcome = (await setStatus(module.name, after, { confirm: "cascade" })) ? after : "";
        await refreshNavigation();
      } catch (error) {
        onInstalled(module);
        finish(
          errorBox(error, `${module.name} is registered, but not ${DONE[after]}`),
          h("p", {}, link, " to configure it and try again."),
        );
        return;
      }
      onInstalled(module);
    }
    finish(
      h(
        "p",
        { class: "alert success", role: "status" },
        `${module.name} ${module.version} is ${DONE[outcome]}. `,
        link,
      ),
    );
  });
}
