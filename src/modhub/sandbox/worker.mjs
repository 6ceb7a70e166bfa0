// The Node.js module worker: runs one module version's TypeScript and JavaScript handlers.
//
// The twin of worker.py, for handlers ending in .ts, .mts, .js or .mjs. It is copied into
// the runtime folder and started by the launcher (sandbox/launch.py) already unprivileged:
// prlimit, setpriv (the module's uid, no capabilities, no_new_privs) and bubblewrap come
// before `node` is exec'd. It uses only Node's standard library.
//
// The handlers it imports were compiled at install time by esbuild (lifecycle/typescript.py)
// into the environment folder: `handlers/status.ts` is `<env>/node/handlers/status.mjs`.
//
// Wire format, both directions: a 4-byte big-endian length, then a JSON object.
// Requests:  {"id", "kind": "route"|"job"|"event"|"ping", "handler", "payload", "config"}
// Responses: {"id", "ok": true, "status", "headers", "body" (base64), "contentType"}
//            {"id", "ok": true, "result"}                       (jobs, events)
//            {"id", "ok": false, "error": "not_found"|"exception", "message"}
// While a request runs, its handler may call module services (sandbox/channel.py):
//            {"call", "rid", "service", "op", "args"} out, {"reply", "ok", "result"|"error"} in.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { AsyncLocalStorage } from "node:async_hooks";
import { pathToFileURL } from "node:url";
import { format } from "node:util";

// The protocol is on file descriptors 3 (in) and 4 (out): the launcher moved it there and
// made fd 0 /dev/null and fd 1 the module log (stderr) before node started, so that even
// `fs.writeSync(1, ...)` in a handler cannot corrupt the frames.
const PROTOCOL_IN = 3;
const PROTOCOL_OUT = 4;
const COMPILED = ".mjs";
const SOURCES = [".ts", ".mts", ".js", ".mjs"];

// -- module output: console and process.stdout go to stderr (the module log) ------------------

// What a log line written while a call runs says of it, as the Python worker does:
// " [request <id>]" or " [run <id>]", and " trace <trace id>" when the server traces the call
// (the frame's traceparent). Each call runs in its own async context, so concurrent calls
// keep their own labels.
const serving = new AsyncLocalStorage();

function label(message) {
  const rid = String(message.requestId ?? "");
  if (!rid) return "";
  const trace = String(message.traceparent ?? "").split("-");
  const traced = trace.length === 4 && trace[1].length === 32 ? ` trace ${trace[1]}` : "";
  return ` [${message.kind === "job" ? "run" : "request"} ${rid}${traced}]`;
}

function logLine(level, args) {
  const text = format(...args);
  const tag = serving.getStore() ?? "";
  for (const line of text.split("\n")) {
    process.stderr.write(`${level} module${tag}: ${line}\n`);
  }
}

const log = {
  debug: (...a) => logLine("DEBUG", a),
  info: (...a) => logLine("INFO", a),
  warn: (...a) => logLine("WARNING", a),
  warning: (...a) => logLine("WARNING", a),
  error: (...a) => logLine("ERROR", a),
};
console.log = log.info;
console.info = log.info;
console.debug = log.debug;
console.warn = log.warn;
console.error = log.error;
console.trace = (...a) => logLine("ERROR", [...a, new Error().stack]);
process.stdout.write = (chunk, encoding, callback) => process.stderr.write(chunk, encoding, callback);

// -- frames ------------------------------------------------------------------------------------

function writeFrame(message) {
  const data = Buffer.from(JSON.stringify(message, jsonSafe));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(data.length);
  const frame = Buffer.concat([header, data]);
  let written = 0;
  while (written < frame.length) {
    try {
      written += fs.writeSync(PROTOCOL_OUT, frame, written);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
    }
  }
}

function jsonSafe(_key, value) {
  if (typeof value === "bigint") return value.toString();
  return value;
}

// -- module services -------------------------------------------------------------------------

class ServiceError extends Error {
  constructor(message, name = "ServiceError") {
    super(message);
    this.name = name;
  }
}

const waiting = new Map();
let nextCall = 0;

function callService(rid, service, op, args) {
  nextCall += 1;
  const number = nextCall;
  return new Promise((resolve, reject) => {
    waiting.set(number, { resolve, reject });
    writeFrame({ call: number, rid, service, op, args });
  });
}

function resolveCall(message) {
  const entry = waiting.get(message.reply);
  if (entry === undefined) return;
  waiting.delete(message.reply);
  if (message.ok) entry.resolve(message.result ?? null);
  else entry.reject(new ServiceError(String(message.message ?? ""), String(message.error)));
}

function entryOf(data) {
  if (data === null || data === undefined) return null;
  return {
    key: data.key,
    value: data.value,
    version: Number(data.version),
    expiresAt: data.expiresAt ?? null,
  };
}

function makeStore(rid) {
  const call = (op, args) => callService(rid, "store", op, args);
  return {
    async get(key, fallback = null) {
      const entry = entryOf(await call("get_entry", { key }));
      return entry === null ? fallback : entry.value;
    },
    async getEntry(key) {
      return entryOf(await call("get_entry", { key }));
    },
    async set(key, value, options = {}) {
      if (value === undefined) throw new ServiceError(`the value of '${key}' is not JSON`, "InvalidValue");
      const args = { key, value, ttl: options.ttl ?? null, ifVersion: options.ifVersion ?? null };
      return Number(await call("set", args));
    },
    async delete(key, options = {}) {
      return Boolean(await call("delete", { key, ifVersion: options.ifVersion ?? null }));
    },
    async list(prefix = "", options = {}) {
      const args = { prefix, limit: options.limit ?? 100, cursor: options.cursor ?? null };
      const page = await call("list", args);
      return { items: page.items.map(entryOf), cursor: page.cursor ?? null };
    },
    async incr(key, by = 1) {
      return Number(await call("incr", { key, by }));
    },
  };
}

function makeModules(rid) {
  return {
    async call(module, method, target, options = {}) {
      const query = {};
      for (const [name, value] of Object.entries(options.query ?? {})) {
        query[name] = (Array.isArray(value) ? value : [value]).map(String);
      }
      const args = {
        module,
        method: String(method).toUpperCase(),
        path: target,
        query,
        headers: { ...(options.headers ?? {}) },
      };
      if (options.json !== undefined) args.json = options.json;
      const answer = await callService(rid, "modules", "call", args);
      const body = Buffer.from(answer.body ?? "", "base64");
      const contentType = answer.contentType || "application/octet-stream";
      let json = null;
      if (contentType.startsWith("application/json") && body.length) json = JSON.parse(body.toString());
      return { status: Number(answer.status), json, body, headers: answer.headers ?? {}, contentType };
    },
  };
}

function makeEvents(rid) {
  return {
    async emit(name, payload = null) {
      if (typeof name !== "string") throw new ServiceError("name: an event name is a string", "EventInvalid");
      const answer = await callService(rid, "events", "emit", { name, payload });
      return { id: Number(answer.id), seq: Number(answer.seq) };
    },
  };
}

// -- handlers ------------------------------------------------------------------------------------

class HandlerNotFound extends Error {}

const functions = new Map();

async function loadHandler(root, ref) {
  const known = functions.get(ref);
  if (known !== undefined) return known;
  const colon = ref.lastIndexOf(":");
  const file = colon > 0 ? ref.slice(0, colon) : ref;
  const name = colon > 0 ? ref.slice(colon + 1) : "handler";
  const extension = SOURCES.find((suffix) => file.endsWith(suffix));
  if (extension === undefined) throw new HandlerNotFound(`'${file}' is not a JavaScript or TypeScript file`);
  const compiled = path.resolve(root, file.slice(0, -extension.length) + COMPILED);
  if (!compiled.startsWith(root + path.sep) || !fs.existsSync(compiled)) {
    throw new HandlerNotFound(`'${file}' was not compiled at install (is it in the module?)`);
  }
  const exports = await import(pathToFileURL(compiled).href);
  let target = exports[name];
  if (target === undefined && name === "handler") target = exports.default;
  if (typeof target !== "function") {
    throw new HandlerNotFound(`'${file}' does not export a function '${name}' (or a default export)`);
  }
  functions.set(ref, target);
  return target;
}

function makeRequest(id, payload, config) {
  const query = payload.query ?? {};
  const first = {};
  for (const [name, values] of Object.entries(query)) if (values.length) first[name] = values[0];
  const body = Buffer.from(payload.body ?? "", "base64");
  const user = payload.user
    ? {
        username: payload.user.username ?? "",
        role: payload.user.role ?? "",
        permissions: [...(payload.user.permissions ?? [])],
        can(permission) {
          const scope = permission.split(":", 1)[0];
          return this.permissions.some((p) => p === "*" || p === permission || p === `${scope}:*`);
        },
      }
    : null;
  return {
    method: payload.method,
    path: payload.path,
    params: payload.pathParams ?? {},
    query: first,
    queryLists: query,
    headers: payload.headers ?? {},
    body,
    text: () => body.toString("utf8"),
    json: () => (body.length ? JSON.parse(body.toString("utf8")) : null),
    user,
    config,
    requestId: payload.requestId ?? "",
    log,
    store: makeStore(id),
    modules: makeModules(id),
    events: makeEvents(id),
  };
}

function makeJobContext(id, payload, config) {
  return {
    job: payload.job,
    scheduledTime: new Date(payload.scheduledTime),
    attempt: payload.attempt ?? 1,
    config,
    runId: payload.runId ?? "",
    log,
    store: makeStore(id),
    modules: makeModules(id),
    events: makeEvents(id),
  };
}

function makeEvent(id, payload, config) {
  return {
    id: Number(payload.id),
    name: payload.name,
    source: payload.source,
    payload: payload.payload ?? null,
    emittedAt: new Date(payload.emittedAt),
    attempt: payload.attempt ?? 1,
    config,
    log,
    store: makeStore(id),
    modules: makeModules(id),
    events: makeEvents(id),
  };
}

function plain(result) {
  return result === undefined ? null : JSON.parse(JSON.stringify(result, jsonSafe) ?? "null");
}

function isResponse(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    !ArrayBuffer.isView(value) &&
    Number.isInteger(value.status) &&
    Object.keys(value).every((key) => ["status", "headers", "json", "body", "contentType"].includes(key))
  );
}

function encode(value) {
  if (isResponse(value)) {
    const headers = {};
    for (const [name, text] of Object.entries(value.headers ?? {})) headers[name] = String(text);
    if (value.body !== undefined && value.body !== null) {
      const bytes = typeof value.body === "string" ? Buffer.from(value.body) : Buffer.from(value.body);
      const type = value.contentType ?? (typeof value.body === "string" ? "text/plain; charset=utf-8" : "application/octet-stream");
      return { status: value.status, headers, bytes, type };
    }
    const bytes = Buffer.from(JSON.stringify(value.json ?? null, jsonSafe));
    return { status: value.status, headers, bytes, type: value.contentType ?? "application/json" };
  }
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    return { status: 200, headers: {}, bytes: Buffer.from(value), type: "application/octet-stream" };
  }
  const bytes = Buffer.from(JSON.stringify(value === undefined ? null : value, jsonSafe));
  return { status: 200, headers: {}, bytes, type: "application/json" };
}

async function run(root, message) {
  const { kind } = message;
  if (kind === "ping") return { ok: true, result: "pong" };
  const fn = await loadHandler(root, message.handler);
  const payload = message.payload ?? {};
  const config = message.config ?? {};
  if (kind === "job") return { ok: true, result: plain(await fn(makeJobContext(message.id, payload, config))) };
  if (kind === "event") return { ok: true, result: plain(await fn(makeEvent(message.id, payload, config))) };
  const answer = encode(await fn(makeRequest(message.id, payload, config)));
  return {
    ok: true,
    status: answer.status,
    headers: answer.headers,
    body: answer.bytes.toString("base64"),
    contentType: answer.type,
  };
}

async function handle(root, message) {
  let answer;
  try {
    answer = await serving.run(label(message), () => run(root, message));
  } catch (error) {
    if (error instanceof HandlerNotFound) {
      answer = { ok: false, error: "not_found", message: error.message };
    } else {
      serving.run(label(message), () =>
        log.error(`handler ${message.handler} failed:\n${error?.stack ?? String(error)}`),
      );
      answer = { ok: false, error: "exception", message: error?.name ?? typeof error };
    }
  }
  answer.id = message.id;
  writeFrame(answer);
}

// -- main ------------------------------------------------------------------------------------------

function main() {
  const at = process.argv.indexOf("--code-dir");
  if (at < 0) {
    process.stderr.write("usage: worker.mjs --code-dir <compiled handlers>\n");
    process.exit(2);
  }
  const root = path.resolve(process.argv[at + 1]);
  // A handler's unhandled rejection is logged, never the end of the worker.
  process.on("unhandledRejection", (reason) => log.error(`unhandled rejection: ${reason?.stack ?? reason}`));
  let buffered = Buffer.alloc(0);
  const input = new net.Socket({ fd: PROTOCOL_IN, readable: true, writable: false });
  input.on("data", (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered.length >= 4) {
      const size = buffered.readUInt32BE(0);
      if (buffered.length < 4 + size) break;
      const message = JSON.parse(buffered.subarray(4, 4 + size).toString("utf8"));
      buffered = buffered.subarray(4 + size);
      if ("reply" in message) resolveCall(message);
      else handle(root, message);
    }
  });
  input.on("end", () => process.exit(0));
}

main();
