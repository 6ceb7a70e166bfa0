// The config form, generated from the manifest's `config.schema`.
//
// One input per field, by type: string → text, password (or sensitive) → write-only
// password, number/integer → number, boolean → checkbox, select → <select>. The client
// checks mirror the server's (modhub.manifest.checks.value_problem) so most mistakes are
// caught before sending; whatever the server still refuses (422, errors at
// /config/<key>) is shown next to its field. Secrets are never shown: the form says
// whether one is set, an empty input keeps it (sent as ********) and a typed value
// replaces it.

import { ApiError, request } from "../api.js";
import { errorBox, h, replace, uid } from "../dom.js";

export const MASK = "********";

function isSecret(spec) {
  return spec.type === "password" || spec.sensitive === true;
}

function optionsOf(spec) {
  return (spec.options || []).map((option) =>
    option !== null && typeof option === "object"
      ? { value: option.value, label: option.label ?? String(option.value) }
      : { value: option, label: String(option) },
  );
}

function formatNumber(value) {
  // Python's `{:g}` for the bounds in messages: 24.0 → "24".
  return String(Number(value));
}

function jsonType(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return (
    { boolean: "a boolean", number: "a number", string: "a string", object: "an object" }[typeof value] ||
    typeof value
  );
}

function pythonRepr(value) {
  if (typeof value === "string") return `'${value}'`;
  if (typeof value === "boolean") return value ? "True" : "False";
  return value === null ? "None" : String(value);
}

/**
 * Why `value` is not acceptable for `spec`, or null: the server's value_problem
 * (modhub.manifest.checks), with its messages.
 */
export function valueProblem(spec, value) {
  const kind = spec.type;
  if (kind === "string" || kind === "password") {
    if (typeof value !== "string") return `must be a string, not ${jsonType(value)}`;
  } else if (kind === "number" || kind === "integer") {
    if (typeof value !== "number") return `must be a number, not ${jsonType(value)}`;
    if (kind === "integer" && !Number.isInteger(value)) return "must be a whole number";
    if (!Number.isFinite(value)) return "must be a finite number";
  } else if (kind === "boolean") {
    if (typeof value !== "boolean") return `must be true or false, not ${jsonType(value)}`;
  } else if (kind === "select") {
    const allowed = optionsOf(spec).map((o) => o.value);
    if (!allowed.some((option) => option === value))
      return `must be one of [${allowed.map(pythonRepr).join(", ")}]`;
  }
  const rules = spec.validation || {};
  if (typeof value === "number") {
    if (rules.min != null && value < rules.min) return `must be at least ${formatNumber(rules.min)}`;
    if (rules.max != null && value > rules.max) return `must be at most ${formatNumber(rules.max)}`;
  }
  if (typeof value === "string") {
    const length = [...value].length; // code points, as Python counts
    if (rules.minLength != null && length < rules.minLength) {
      return `must be at least ${rules.minLength} characters long`;
    }
    if (rules.maxLength != null && length > rules.maxLength) {
      return `must be at most ${rules.maxLength} characters long`;
    }
    if (rules.pattern != null) {
      let pattern = null;
      try {
        pattern = new RegExp(rules.pattern);
      } catch {
        pattern = null; // a pattern JavaScript cannot read: the server decides
      }
      if (pattern && !pattern.test(value)) return `must match the pattern ${rules.pattern}`;
    }
  }
  return null;
}

/** Build the input of one field; returns {element, read(), setError(text)}. */
function field(key, spec, current, stored) {
  const id = uid(`config-${key}`);
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const secret = isSecret(spec);
  const label = spec.label || key;
  const describedBy = [spec.description ? hintId : null, errorId].filter(Boolean).join(" ");
  const common = {
    id,
    name: key,
    "aria-describedby": describedBy,
    "aria-required": spec.required ? "true" : null,
    dataset: { key },
  };
  const rules = spec.validation || {};
  let input;
  let read;

  if (secret) {
    input = h("input", {
      ...common,
      type: "password",
      autocomplete: "new-password",
      placeholder: stored ? "Leave empty to keep the current value" : "Enter a value",
    });
    read = () =>
      input.value === "" ? (stored ? { value: MASK } : { missing: true }) : { value: input.value };
  } else if (spec.type === "boolean") {
    input = h("input", {
      ...common,
      type: "checkbox",
      checked: current === true || (current === undefined && spec.default === true),
    });
    read = () => ({ value: input.checked });
  } else if (spec.type === "select") {
    const options = optionsOf(spec);
    input = h(
      "select",
      common,
      h("option", { value: "", text: spec.required ? "Choose…" : "— not set —" }),
      options.map((option, index) => h("option", { value: String(index), text: option.label })),
    );
    const index = options.findIndex((o) => o.value === current);
    input.value = index >= 0 ? String(index) : "";
    read = () => (input.value === "" ? { missing: true } : { value: options[Number(input.value)].value });
  } else if (spec.type === "number" || spec.type === "integer") {
    input = h("input", {
      ...common,
      type: "number",
      inputmode: spec.type === "integer" ? "numeric" : "decimal",
      step: spec.type === "integer" ? "1" : "any",
      min: rules.min,
      max: rules.max,
      value: typeof current === "number" ? String(current) : "",
      placeholder: spec.default != null ? `Default: ${spec.default}` : null,
    });
    read = () => {
      if (input.validity.badInput) return { problem: "must be a number" };
      return input.value === "" ? { missing: true } : { value: Number(input.value) };
    };
  } else {
    input = h("input", {
      ...common,
      type: "text",
      minlength: rules.minLength,
      maxlength: null, // not enforced by the browser, so that the check can explain it
      value: typeof current === "string" ? current : "",
      placeholder: spec.default != null ? `Default: ${spec.default}` : null,
    });
    read = () => (input.value === "" ? { missing: true } : { value: input.value });
  }

  const error = h("p", { id: errorId, class: "field-error" });
  const labelRow = h(
    "label",
    { for: id },
    label,
    spec.required
      ? h(
          "span",
          { class: "required", title: "required" },
          h("span", { "aria-hidden": "true", text: " *" }),
          h("span", { class: "visually-hidden", text: " (required)" }),
        )
      : null,
  );
  const secretState = secret
    ? h("span", {
        class: `badge ${stored ? "secret-set" : "secret-unset"}`,
        dataset: { secretState: stored ? "set" : "not set" },
        text: stored ? "set" : "not set",
      })
    : null;
  const header = h(
    "div",
    { class: "field-label" },
    labelRow,
    secretState,
    h("code", { class: "field-key", text: key }),
  );
  const element =
    spec.type === "boolean"
      ? h(
          "div",
          { class: "field checkbox-field", dataset: { field: key } },
          h("div", { class: "checkbox-row" }, input, header),
          hint(),
          error,
        )
      : h("div", { class: "field", dataset: { field: key } }, header, input, hint(), error);

  function hint() {
    const bits = [spec.description, rangeText(spec)].filter(Boolean).join(" ");
    return bits ? h("p", { id: hintId, class: "hint", text: bits }) : null;
  }

  return {
    element,
    input,
    read,
    setError(text) {
      error.textContent = text || "";
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      element.classList.toggle("invalid", Boolean(text));
    },
  };
}

function rangeText(spec) {
  const rules = spec.validation || {};
  const parts = [];
  if (rules.min != null && rules.max != null) parts.push(`Between ${rules.min} and ${rules.max}.`);
  else if (rules.min != null) parts.push(`At least ${rules.min}.`);
  else if (rules.max != null) parts.push(`At most ${rules.max}.`);
  if (rules.minLength != null && rules.maxLength != null)
    parts.push(`${rules.minLength}–${rules.maxLength} characters.`);
  else if (rules.maxLength != null) parts.push(`Up to ${rules.maxLength} characters.`);
  else if (rules.minLength != null) parts.push(`At least ${rules.minLength} characters.`);
  if (spec.default != null && !isSecret(spec)) parts.push(`Default: ${spec.default}.`);
  return parts.join(" ");
}

/**
 * Render the config form of `module` into `container`. `onSaved(config)` runs after the
 * server accepted it. `readOnly` disables every input (no modules:write).
 */
export function renderConfigForm(
  container,
  module,
  { readOnly = false, onSaved = () => {}, notice = null } = {},
) {
  const declared = module.manifest.config || {};
  const defaults = declared.defaults || {};
  // Each field with its effective default (config.defaults wins, as on the server).
  const schema = Object.fromEntries(
    Object.entries(declared.schema || {}).map(([key, spec]) => [
      key,
      { ...spec, default: defaults[key] ?? spec.default },
    ]),
  );
  const keys = Object.keys(schema);
  if (!keys.length) {
    replace(container, h("p", { class: "empty", text: "This module has no configuration." }));
    return;
  }
  const fields = new Map();
  for (const key of keys) {
    const current = module.config[key];
    fields.set(key, field(key, schema[key], current, current === MASK));
  }
  const message = h("div", { class: "form-message", "aria-live": "polite" }, notice);
  const save = h("button", {
    type: "submit",
    class: "primary",
    text: "Save configuration",
    disabled: readOnly,
  });
  const reset = h("button", { type: "reset", class: "secondary", text: "Reset", disabled: readOnly });
  const form = h(
    "form",
    { id: "config-form", class: "config-form", novalidate: true, "aria-label": "Configuration" },
    h(
      "fieldset",
      { disabled: readOnly },
      [...fields.values()].map((f) => f.element),
    ),
    message,
    h("div", { class: "form-actions" }, save, reset),
  );

  function collect() {
    const config = {};
    const problems = new Map();
    for (const [key, item] of fields) {
      const spec = schema[key];
      const read = item.read();
      if (read.problem) {
        problems.set(key, read.problem);
        continue;
      }
      if (read.missing) {
        const hasDefault = !isSecret(spec) && spec.default != null;
        if (spec.required && !hasDefault) problems.set(key, "is required");
        continue; // left out: the server applies the default (or leaves it unset)
      }
      if (read.value === MASK && isSecret(spec)) {
        config[key] = MASK;
        continue;
      }
      const problem = valueProblem(spec, read.value);
      if (problem) problems.set(key, problem);
      else config[key] = read.value;
    }
    return { config, problems };
  }

  function showErrors(problems) {
    for (const [key, item] of fields) item.setError(problems.get(key));
    const first = [...fields].find(([key]) => problems.has(key));
    if (first) first[1].input.focus();
  }

  form.addEventListener("reset", (event) => {
    event.preventDefault();
    renderConfigForm(container, module, { readOnly, onSaved });
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(message);
    const { config, problems } = collect();
    showErrors(problems);
    if (problems.size) {
      replace(
        message,
        h("p", { class: "alert error", role: "alert", text: `Fix ${problems.size} field(s) marked below.` }),
      );
      return;
    }
    save.disabled = true;
    try {
      const { data } = await request("PUT", `/modules/${encodeURIComponent(module.name)}/config`, {
        body: { config },
      });
      // Draw the form again from the saved config: secrets now say "set", inputs are empty.
      const saved = h("p", { class: "alert success", role: "status", text: "Configuration saved." });
      renderConfigForm(container, { ...module, config: data.config }, { readOnly, onSaved, notice: saved });
      onSaved(data.config);
      return;
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) {
        const byField = new Map();
        const rest = [];
        for (const item of error.errors) {
          const key = (item.path || "").startsWith("/config/") ? item.path.slice("/config/".length) : null;
          // the server says "'key' must …": next to the field, the key is implied
          if (key && fields.has(key)) byField.set(key, item.message.replace(`'${key}' `, ""));
          else rest.push(item);
        }
        showErrors(byField);
        replace(
          message,
          rest.length
            ? errorBox(
                new ApiError(422, { ...error.problem, errors: rest }),
                "The server refused the configuration",
              )
            : h("p", {
                class: "alert error",
                role: "alert",
                text: `The server refused ${byField.size} field(s) marked below.`,
              }),
        );
      } else {
        replace(message, errorBox(error, "Could not save the configuration"));
      }
    } finally {
      save.disabled = readOnly;
    }
  });

  replace(container, form);
}
