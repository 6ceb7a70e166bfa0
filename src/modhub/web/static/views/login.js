// The login form: POST /auth/login, then on to where the user was going.

import { ApiError, login } from "../api.js";
import { h, replace } from "../dom.js";
import { loadUser, refreshNavigation } from "../navigation.js";
import { navigate } from "../router.js";

function safeNext(next) {
  // Only console paths: never an absolute or protocol-relative URL.
  return next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login")
    ? next
    : "/modules";
}

export function render(container) {
  document.title = "Log in · modhub";
  const message = h("div", { class: "form-message", "aria-live": "assertive" });
  const username = h("input", {
    id: "login-username",
    name: "username",
    autocomplete: "username",
    required: true,
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "primary wide", text: "Log in" });
  const form = h(
    "form",
    { class: "login-card card", "aria-labelledby": "login-title", novalidate: true },
    h(
      "div",
      { class: "login-brand", "aria-hidden": "true" },
      h("span", { class: "logo", text: "m" }),
      "modhub",
    ),
    h("h1", { id: "login-title", text: "Log in to the console" }),
    h("div", { class: "field" }, h("label", { for: "login-username", text: "Username" }), username),
    h("div", { class: "field" }, h("label", { for: "login-password", text: "Password" }), password),
    message,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!username.value || !password.value) {
      replace(
        message,
        h("p", { class: "alert error", role: "alert", text: "Enter your username and password." }),
      );
      return;
    }
    submit.disabled = true;
    replace(message);
    try {
      await login(username.value, password.value);
      await loadUser();
      await refreshNavigation();
      navigate(safeNext(new URLSearchParams(location.search).get("next")), { replace: true });
    } catch (error) {
      const text =
        error instanceof ApiError && error.status === 401
          ? "Wrong username or password."
          : error.message || "Could not log in.";
      replace(message, h("p", { class: "alert error", role: "alert", text }));
      submit.disabled = false;
      password.select();
    }
  });
  replace(container, h("div", { class: "login-page" }, form));
  username.focus();
}
