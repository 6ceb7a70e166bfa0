// The console's side of a module page's frame: the page runs in a sandboxed iframe (an
// opaque origin: no access to this window, its storage or the token); this bridge makes
// the page's context.fetch calls for it, with the user's token, to the module's own routes
// only (/api/v1/m/<module>/...). The token is never posted to the frame.

import { session, unauthorizedAnswer } from "./api.js";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
// The request headers a page may set; the console sets Authorization itself.
const HEADERS = new Set([
  "accept",
  "accept-language",
  "content-language",
  "content-type",
  "if-match",
  "if-none-match",
  "if-modified-since",
  "if-unmodified-since",
  "range",
]);
const UNSAFE_X_HEADER = /^x-(forwarded|real-ip|http-method|method-override|original-|rewrite-)/;
const MAX_HEIGHT = 100_000;
const UNMOUNT_WAIT_MS = 3000;

/**
 * Return the URL a page asked for, resolved against its module's API base, if it stays
 * under that base on this origin; throw a TypeError naming what is wrong otherwise.
 */
export function checkedTarget(apiBase, raw, method) {
  const refuse = (why) => new TypeError(`context.fetch refused: ${why}`);
  if (typeof raw !== "string" || raw.length > 8192) throw refuse('"url" must be a string');
  if (typeof method !== "string" || !METHODS.has(method)) {
    throw refuse(`"method" must be one of ${[...METHODS].join(", ")} (got ${String(method)})`);
  }
  // Control characters anywhere, and in the path encoded slashes, dots or backslashes and
  // dot segments, are refused before the URL is even resolved: no spelling may climb out
  // of the base (the URL parser drops tabs and newlines, and reads "\\" and "%2e" itself).
  if (/[\u0000-\u001f\u007f]/.test(raw)) throw refuse(`"url" may not hold control characters`);
  const path = raw.split(/[?#]/, 1)[0];
  if (/%2f|%5c|%2e|\\/i.test(path)) {
    throw refuse(`"url" may not hold an encoded slash, dot or backslash: ${raw}`);
  }
  if (/(^|\/)\.\.?(\/|$)/.test(path)) throw refuse(`"url" may not hold . or .. segments: ${raw}`);
  const base = new URL(`${apiBase}/`, location.origin);
  let target;
  try {
    target = new URL(raw, base);
  } catch {
    throw refuse(`"url" is not a URL: ${raw}`);
  }
  const inside = target.pathname === apiBase || target.pathname.startsWith(`${apiBase}/`);
  if (target.origin !== location.origin || target.username || target.password || !inside) {
    throw refuse(`"url" must be under ${apiBase}/ on this server (got ${raw})`);
  }
  return target;
}

function pageHeaders(pairs) {
  const headers = new Headers();
  for (const [name, value] of Array.isArray(pairs) ? pairs : []) {
    const key = String(name).toLowerCase();
    if (HEADERS.has(key) || (key.startsWith("x-") && !UNSAFE_X_HEADER.test(key))) {
      headers.append(key, String(value));
    }
  }
  return headers;
}

async function perform(apiBase, message, signal) {
  const target = checkedTarget(apiBase, message.url, message.method);
  const headers = pageHeaders(message.headers);
  const token = session.token;
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const hasBody = message.body instanceof ArrayBuffer && !["GET", "HEAD"].includes(message.method);
  // redirect "error": a route answering 307 to another path of the API must not make the
  // console repeat the call there with the token.
  const response = await fetch(target.href, {
    method: message.method,
    headers,
    body: hasBody ? message.body : undefined,
    credentials: "omit",
    redirect: "error",
    referrerPolicy: "same-origin",
    signal,
  });
  if (response.status === 401) unauthorizedAnswer();
  const body = await response.arrayBuffer();
  return {
    type: "response",
    id: message.id,
    status: response.status,
    statusText: response.statusText,
    headers: [...response.headers],
    body,
  };
}

/**
 * Connect `frame` (a sandboxed iframe, not yet in the document) to the page `entry`;
 * return `close()`, which unmounts the page (waiting a little for it) and ends the bridge.
 */
export function connectPage(frame, entry, user) {
  let port = null;
  let closed = false;
  let unmounted = null;
  const calls = new Map();

  function onPortMessage({ data: message }) {
    if (closed || !message || typeof message !== "object") return;
    if (message.type === "resize") {
      const height = Math.min(Math.max(Number(message.height) || 0, 60), MAX_HEIGHT);
      frame.style.height = `${height}px`;
    } else if (message.type === "unmounted") {
      if (unmounted) unmounted();
    } else if (message.type === "abort") {
      calls.get(message.id)?.abort();
    } else if (message.type === "fetch") {
      const controller = new AbortController();
      const current = port;
      calls.set(message.id, controller);
      perform(entry.apiBase, message, controller.signal)
        .catch((error) => ({ type: "error", id: message.id, message: error.message || String(error) }))
        .then((answer) => {
          calls.delete(message.id);
          if (!closed && current === port) current.postMessage(answer, answer.body ? [answer.body] : []);
        });
    }
  }

  function onWindowMessage(event) {
    // Only that frame's window may open the bridge; a frame that reloads (or navigates
    // itself) gets a new port, and the old one is closed.
    if (closed || event.source !== frame.contentWindow) return;
    if (!event.data || event.data.type !== "modhub:ready") return;
    if (port) port.close();
    const channel = new MessageChannel();
    port = channel.port1;
    port.onmessage = onPortMessage;
    const init = {
      type: "modhub:init",
      module: entry.module,
      title: entry.title,
      apiBase: entry.apiBase,
      componentUrl: entry.componentUrl,
      user: user ? { username: user.username, role: user.role, permissions: [...user.permissions] } : null,
    };
    frame.contentWindow.postMessage(init, "*", [channel.port2]);
  }

  window.addEventListener("message", onWindowMessage);

  return async function close() {
    if (port && !closed) {
      const done = new Promise((resolve) => {
        unmounted = resolve;
        setTimeout(resolve, UNMOUNT_WAIT_MS);
      });
      port.postMessage({ type: "unmount" });
      await done;
    }
    closed = true;
    window.removeEventListener("message", onWindowMessage);
    for (const controller of calls.values()) controller.abort();
    if (port) port.close();
    frame.remove();
  };
}
