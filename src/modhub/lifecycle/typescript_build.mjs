// Compile a module's TypeScript and JavaScript with esbuild (run by lifecycle/typescript.py).
//
// argv[2]: the folder esbuild is installed in (tools/node/node_modules/esbuild);
// argv[3]: a JSON job {root, outdir, entries, platform, write, nodePaths}.
// Prints one JSON object: {"errors": [{file, line, column, text}], "exports": {entry: [names]}}.
// esbuild only parses and transforms the module's files: no plugin, nothing of the module runs.

import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const esbuild = require(process.argv[2]);
const job = JSON.parse(process.argv[3]);

const browser = job.platform === "browser";
const options = {
  absWorkingDir: job.root,
  entryPoints: job.entries.map((entry) => path.join(job.root, entry)),
  outdir: job.outdir,
  outbase: job.root,
  bundle: true,
  format: "esm",
  platform: browser ? "browser" : "node",
  target: browser ? "es2020" : "node20",
  outExtension: { ".js": browser ? ".js" : ".mjs" },
  metafile: true,
  write: job.write,
  logLevel: "silent",
  sourcemap: browser ? false : "inline",
  jsx: "automatic",
  nodePaths: job.nodePaths ?? [],
  loader: { ".json": "json" },
  // Node handlers: packages stay imports, resolved at run time from the environment's
  // node_modules; a page bundles everything it imports (the console serves one file).
  packages: browser ? undefined : "external",
  define: browser ? { "process.env.NODE_ENV": '"production"' } : undefined,
  minify: browser,
};

function located(message) {
  const where = message.location;
  return {
    file: where ? where.file : "",
    line: where ? where.line : 0,
    column: where ? where.column + 1 : 0,
    text: message.text,
  };
}

// A page that default-exports a React component gets mount/unmount from a wrapper that
// renders it with the module's own react-dom (bundled in: no CDN).
function reactWrapper(file) {
  return [
    `import Component from ${JSON.stringify(file)};`,
    'import { createElement } from "react";',
    'import { createRoot } from "react-dom/client";',
    "const roots = new WeakMap();",
    "export function mount(element, context) {",
    "  const root = createRoot(element);",
    "  roots.set(element, root);",
    "  root.render(createElement(Component, context));",
    "}",
    "export function unmount(element) {",
    "  roots.get(element)?.unmount();",
    "  roots.delete(element);",
    "}",
  ].join("\n");
}

async function pageEntries() {
  // Which pages export mount (served as they are) and which a default component.
  const probe = await esbuild.build({ ...options, write: false, packages: "external", minify: false });
  const exports = {};
  for (const output of Object.values(probe.metafile.outputs)) {
    if (output.entryPoint) exports[output.entryPoint] = output.exports;
  }
  return job.entries.map((entry) => {
    const names = exports[entry] ?? [];
    const out = entry.replace(/\.[^./]+$/, "");
    if (names.includes("mount") || !names.includes("default")) return { in: path.join(job.root, entry), out };
    return { in: `modhub-page:${path.join(job.root, entry)}`, out };
  });
}

const pagePlugin = {
  name: "modhub-page",
  setup(build) {
    build.onResolve({ filter: /^modhub-page:/ }, (args) => ({ path: args.path.slice(12), namespace: "modhub-page" }));
    build.onLoad({ filter: /.*/, namespace: "modhub-page" }, (args) => ({
      contents: reactWrapper(args.path),
      resolveDir: path.dirname(args.path),
      loader: "js",
    }));
  },
};

try {
  if (browser) {
    options.entryPoints = await pageEntries();
    options.plugins = [pagePlugin];
    delete options.outbase;
  }
  const result = await esbuild.build(options);
  const exports = {};
  for (const output of Object.values(result.metafile.outputs)) {
    if (!output.entryPoint) continue;
    const entry = output.entryPoint.replace(/^modhub-page:/, "");
    exports[path.isAbsolute(entry) ? path.relative(job.root, entry) : entry] = output.exports;
  }
  process.stdout.write(JSON.stringify({ errors: [], exports }));
} catch (error) {
  const errors = (error.errors ?? [{ text: String(error) }]).map(located);
  process.stdout.write(JSON.stringify({ errors, exports: {} }));
}
