// Handlers the Node worker tests call: well-behaved ones, and attacks on the sandbox.
import { execSync, spawn } from "node:child_process";
import fs from "node:fs";
import { shared } from "../lib/shared.ts";

interface Request {
  method: string;
  path: string;
  params: Record<string, string>;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: Uint8Array;
  json(): unknown;
  user: { username: string; role: string; permissions: string[]; can(p: string): boolean } | null;
  config: Record<string, unknown>;
  requestId: string;
  log: { info(...a: unknown[]): void };
  store: any;
  modules: any;
}

export async function handler(request: Request) {
  return { ok: true, language: "typescript", shared: shared() };
}

export async function ok() {
  return { ok: true };
}

export async function echo(request: Request) {
  console.log("echo called by", request.user?.username);
  return {
    status: 201,
    headers: { "X-Echo": "yes" },
    json: {
      method: request.method,
      path: request.path,
      params: request.params,
      query: request.query,
      body: request.json(),
      user: request.user?.username,
      canRead: request.user?.can("vmware:read"),
      config: request.config,
      requestId: request.requestId,
    },
  };
}

export function text() {
  return { status: 200, body: "plain words", contentType: "text/plain" };
}

export async function fails() {
  throw new TypeError("the handler broke");
}

export async function counter(request: Request) {
  const count = await request.store.incr("count");
  await request.store.set("last", { by: request.user?.username });
  return { count, last: await request.store.get("last") };
}

export async function memoryBomb() {
  const hoard: string[][] = [];
  for (;;) hoard.push(new Array(1_000_000).fill("x".repeat(16)));
}

export async function bufferBomb() {
  const hoard: Buffer[] = [];
  for (;;) hoard.push(Buffer.alloc(64 * 1024 * 1024, 1));
}

export async function endless() {
  for (;;) {}
}

export async function exit() {
  process.exit(3);
}

export async function forkBomb() {
  let spawned = 0;
  let refused = "";
  for (let i = 0; i < 500; i++) {
    const child = spawn("/bin/sh", ["-c", "sleep 60"], { stdio: "ignore" });
    const started = await new Promise<boolean>((resolve) => {
      child.once("spawn", () => resolve(true));
      child.once("error", (error) => {
        refused = String(error);
        resolve(false);
      });
    });
    if (started) spawned += 1;
  }
  return { spawned, refused };
}

export async function readPath(request: Request) {
  const target = request.query.path;
  try {
    return { read: fs.readFileSync(target).length };
  } catch (error: any) {
    return { refused: error.code };
  }
}

export async function listDir(request: Request) {
  try {
    return { entries: fs.readdirSync(request.query.path) };
  } catch (error: any) {
    return { refused: error.code };
  }
}

export async function huge() {
  return { status: 200, body: "x".repeat(40 * 1024 * 1024), contentType: "text/plain" };
}

export async function whoami() {
  return { uid: process.getuid?.(), pid: process.pid, shell: execSync("id -u").toString().trim() };
}

export async function network() {
  try {
    const response = await fetch("http://127.0.0.1:9/", { signal: AbortSignal.timeout(2000) });
    return { status: response.status };
  } catch (error: any) {
    return { refused: String(error.cause?.code ?? error) };
  }
}

export default async function fallback() {
  return { default: true };
}

export async function noisy() {
  fs.writeSync(1, "raw bytes on file descriptor 1\n");
  process.stdout.write("process.stdout too\n");
  console.log("and console.log");
  return { quiet: false };
}

export async function onEvent(event: any) {
  const emitted = await event.events.emit("vm.seen", { from: event.name });
  return { name: event.name, source: event.source, payload: event.payload, attempt: event.attempt, emitted };
}
