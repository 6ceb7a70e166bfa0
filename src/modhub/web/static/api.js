// The console's only door to the server: the token, JSON, problem+json errors, 401s,
// lifecycle operations (202 + polling) and bundle uploads with progress.

const API = "/api/v1";
const TOKEN_KEY = "modhub.token";
const EXPIRES_KEY = "modhub.expiresAt";
const POLL_MS = 400;

let unauthorized = () => {};

/** An error answer of the API; `problem` is its RFC 9457 body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** The per-field errors ([{path, code, message}]), if any. */
  get errors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

export const session = {
  get token() {
    const expiresAt = Number(sessionStorage.getItem(EXPIRES_KEY) || 0);
    if (expiresAt && Date.now() >= expiresAt) {
      this.clear();
      return null;
    }
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token, expiresIn) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(EXPIRES_KEY, String(Date.now() + expiresIn * 1000));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
  },
};

/** Set what happens when the server answers 401 (the console goes back to login). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "" && value !== false) {
      params.set(key, String(value));
    }
  }
  const search = params.toString();
  return API + path + (search ? `?${search}` : "");
}

async function problemOf(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through: a broken body is reported by its status
    }
  }
  return {
    title: response.statusText || "Error",
    status: response.status,
    detail: `HTTP ${response.status}`,
  };
}

/**
 * Call the API; return `{status, data}` (data is null for 204).
 * Throws ApiError for every error answer; a 401 also ends the session.
 */
export async function request(method, path, { query, body } = {}) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && path !== "/auth/login") {
      session.clear();
      unauthorized();
    }
    throw new ApiError(response.status, problem);
  }
  const data = response.status === 204 ? null : await response.json();
  return { status: response.status, data };
}

/** GET `path` and return its JSON. */
export async function get(path, query) {
  return (await request("GET", path, { query })).data;
}

/** Log in and keep the token for this browser tab. */
export async function login(username, password) {
  const { data } = await request("POST", "/auth/login", { body: { username, password } });
  session.set(data.accessToken, data.expiresIn);
  return data;
}

/**
 * Run a lifecycle call (status change, upgrade, rollback, remove). When the server answers
 * 202 with an operation, poll it until it ends, reporting it to `onOperation`; throw
 * ApiError when it fails.
 */
export async function lifecycle(method, path, { query, body, onOperation } = {}) {
  const answer = await request(method, path, { query, body });
  if (answer.status !== 202) return answer.data;
  let operation = answer.data;
  for (;;) {
    if (onOperation) onOperation(operation);
    if (operation.status !== "running") break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    operation = await get(`/operations/${encodeURIComponent(operation.id)}`);
  }
  if (operation.status !== "succeeded") {
    throw new ApiError(500, {
      title: `The ${operation.kind} operation failed`,
      detail: operation.error || `the ${operation.kind} of ${operation.module} failed`,
      logTail: operation.logTail,
    });
  }
  return null;
}

/**
 * Upload a bundle file (multipart field `file`) with XMLHttpRequest, so that upload
 * progress can be shown: `onProgress(loaded, total)`. Resolves with the registered module.
 */
export function uploadBundle(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url("/modules/bundles"));
    const token = session.token;
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = { title: xhr.statusText, detail: `HTTP ${xhr.status}` };
      }
      if (xhr.status === 201) {
        resolve(body);
        return;
      }
      if (xhr.status === 401) {
        session.clear();
        unauthorized();
      }
      reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, { title: "Network error", detail: "the upload did not reach the server" })),
    );
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** End the session after a 401 from a call made for a module's page. */
export function unauthorizedAnswer() {
  session.clear();
  unauthorized();
}
