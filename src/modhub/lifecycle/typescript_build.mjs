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

try {
  const result = await esbuild.build(options);
  const exports = {};
  for (const output of Object.values(result.metafile.outputs)) {
    if (output.entryPoint) exports[output.entryPoint] = output.exports;
  }
  process.stdout.write(JSON.stringify({ errors: [], exports }));
} catch (error) {
  const errors = (error.errors ?? [{ text: String(error) }]).map(located);
  process.stdout.write(JSON.stringify({ errors, exports: {} }));
}
