// Runs in the sandboxed frame of a module's page (/ui/page-frame, an opaque origin):
// imports the page's component, mounts it with its context, and carries its
// context.fetch to the console over the MessagePort the console hands over. A classic
// script, not a module: the frame's opaque origin would need CORS to load console modules.

"use strict";

(() => {
  const NULL_BODY = new Set([101, 103, 204, 205, 304]);
  const root = document.getElementById("page");
  const pending = new Map();
  let port = null;
  let component = null;
  let nextId = 1;

  function showError(title, error) {
    const box = document.createElement("div");
    box.className = "alert error";
    box.setAttribute("role", "alert");
    const strong = document.createElement("strong");
    strong.textContent = title;
    const text = document.createElement("p");
    text.textContent = error && error.message ? error.message : String(error);
    box.append(strong, text);
    root.replaceChildren(box);
  }

  /** The page's fetch: the console calls the module's own routes for it. */
  function moduleFetch(apiBase) {
    const base = new URL(`${apiBase.replace(/\/$/, "")}/`, location.href);
    return async (input, init = {}) => {
      const raw = input instanceof Request ? input.url : String(input);
      const request = new Request(input instanceof Request ? input : new URL(raw, base), init);
      const method = request.method.toUpperCase();
      const body = method === "GET" || method === "HEAD" ? null : await request.arrayBuffer();
      const signal = init.signal || (input instanceof Request ? input.signal : null);
      if (signal && signal.aborted) throw signal.reason;
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject, method, url: request.url });
        if (signal) {
          signal.addEventListener("abort", () => {
            if (!pending.delete(id)) return;
            port.postMessage({ type: "abort", id });
            reject(signal.reason);
          });
        }
        const message = {
          type: "fetch",
          id,
          url: raw,
          method,
          headers: [...request.headers],
          body: body && body.byteLength ? body : null,
        };
        port.postMessage(message, message.body ? [message.body] : []);
      });
    };
  }

  function settle(message) {
    const call = pending.get(message.id);
    if (!call) return;
    pending.delete(message.id);
    if (message.type === "error") {
      call.reject(new TypeError(message.message));
      return;
    }
    const empty = NULL_BODY.has(message.status) || call.method === "HEAD";
    const response = new Response(empty ? null : message.body, {
      status: message.status,
      statusText: message.statusText,
      headers: message.headers,
    });
    Object.defineProperty(response, "url", { value: call.url });
    call.resolve(response);
  }

  async function unmount() {
    try {
      if (component && typeof component.unmount === "function") await component.unmount(root);
    } finally {
      port.postMessage({ type: "unmounted" });
    }
  }

  function reportHeight() {
    port.postMessage({ type: "resize", height: Math.ceil(document.body.getBoundingClientRect().height) });
  }

  async function start(init) {
    document.title = init.title;
    new ResizeObserver(reportHeight).observe(document.body);
    const context = Object.freeze({
      apiBase: init.apiBase,
      fetch: moduleFetch(init.apiBase),
      user: init.user ? Object.freeze(init.user) : null,
      module: init.module,
    });
    try {
      // Absolute: a classic script of another origin has no base URL for import().
      component = await import(new URL(init.componentUrl, location.href).href);
    } catch (error) {
      showError(`Could not load the page of ${init.module}`, error);
      return;
    }
    if (typeof component.mount !== "function") {
      showError("Not a page component", new Error(`${init.componentUrl} exports no mount()`));
      return;
    }
    try {
      await component.mount(root, context);
    } catch (error) {
      showError(`The page of ${init.module} failed`, error);
    }
  }

  window.addEventListener("message", (event) => {
    // One init per document, from the console that framed it, with the port.
    const data = event.data;
    if (port || event.source !== window.parent || window.parent === window) return;
    if (!data || data.type !== "modhub:init" || !event.ports[0]) return;
    port = event.ports[0];
    port.onmessage = ({ data: message }) => {
      if (message.type === "response" || message.type === "error") settle(message);
      else if (message.type === "unmount") unmount();
    };
    start(data);
  });
  if (window.parent !== window) window.parent.postMessage({ type: "modhub:ready" }, "*");
})();
