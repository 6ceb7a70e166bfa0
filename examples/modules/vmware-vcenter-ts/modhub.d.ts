// Types of the modhub handler contract for TypeScript and JavaScript handlers.
// Print them with `modhub sdk types > modhub.d.ts`; see docs/typescript.md.
// The Node worker (sandbox/worker.mjs) builds these values; they mirror modhub.sdk.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Log {
  debug(...values: unknown[]): void;
  info(...values: unknown[]): void;
  warn(...values: unknown[]): void;
  warning(...values: unknown[]): void;
  error(...values: unknown[]): void;
}

/** One stored key: its value, its version (1 on the first set) and when it expires. */
export interface Entry<T = Json> {
  key: string;
  value: T;
  version: number;
  expiresAt: string | null;
}

/** A page of entries in key order; pass `cursor` to `list` for the next one. */
export interface Page<T = Json> {
  items: Entry<T>[];
  cursor: string | null;
}

/** The module's own key-value store. Keys: non-empty strings of at most 512 bytes;
 * values: any JSON up to 1 MiB. Errors reject with `name` VersionConflict, QuotaExceeded,
 * ValueTooLarge, InvalidKey, InvalidValue or StoreError. */
export interface Store {
  get<T = Json>(key: string, fallback?: T | null): Promise<T | null>;
  getEntry<T = Json>(key: string): Promise<Entry<T> | null>;
  /** Returns the new version. `ifVersion: 0`: only if absent; `N`: only if at version N. */
  set(key: string, value: Json, options?: { ttl?: number; ifVersion?: number }): Promise<number>;
  delete(key: string, options?: { ifVersion?: number }): Promise<boolean>;
  list<T = Json>(prefix?: string, options?: { limit?: number; cursor?: string | null }): Promise<Page<T>>;
  incr(key: string, by?: number): Promise<number>;
}

export interface CallResponse<T = any> {
  status: number;
  json: T | null;
  body: Uint8Array;
  headers: Record<string, string>;
  contentType: string;
}

/** Calls to routes of the modules listed in `dependencies.modules`, as the request's user
 * (in a job or an event: as this module). Refusals reject with `name` CallRefused. */
export interface ModuleCalls {
  call<T = any>(
    module: string,
    method: string,
    path: string,
    options?: { json?: Json; query?: Record<string, string | string[]>; headers?: Record<string, string> },
  ): Promise<CallResponse<T>>;
}

/** Emit the events this module declares in `capabilities.events.emits`. */
export interface Events {
  emit(name: string, payload?: Json): Promise<{ id: number; seq: number }>;
}

export interface User {
  username: string;
  role: string;
  permissions: string[];
  /** Whether the user holds `permission` (directly, by `scope:*` or `*`). */
  can(permission: string): boolean;
}

export interface Services {
  config: Record<string, any>;
  log: Log;
  store: Store;
  modules: ModuleCalls;
  events: Events;
}

/** One HTTP request to a module route. */
export interface Request extends Services {
  method: string;
  path: string;
  params: Record<string, string>;
  query: Record<string, string>;
  queryLists: Record<string, string[]>;
  headers: Record<string, string>;
  body: Uint8Array;
  text(): string;
  json<T = any>(): T | null;
  user: User | null;
  requestId: string;
}

/** What a route handler may return to choose the status, headers or raw bytes. */
export type Response =
  | { status: number; headers?: Record<string, string>; json?: unknown; contentType?: string }
  | { status: number; headers?: Record<string, string>; body: string | Uint8Array; contentType?: string };

/** A route handler: `export async function handler(request)` or a default export. */
export type RouteHandler = (request: Request) => unknown | Promise<unknown>;

/** What a job handler receives for one run. */
export interface JobContext extends Services {
  job: string;
  scheduledTime: Date;
  attempt: number;
  runId: string;
}

export type JobHandler = (context: JobContext) => Json | void | Promise<Json | void>;

/** What an event subscription's handler receives for one delivery. */
export interface Event<T = Json> extends Services {
  id: number;
  name: string;
  source: string;
  payload: T;
  emittedAt: Date;
  attempt: number;
}

export type EventHandler = (event: Event) => Json | void | Promise<Json | void>;
