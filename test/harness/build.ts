/*
 * build.ts - how process-level tests run Tandem: the compiled dist/ (what bin/tandem and
 * production run), never the TypeScript sources through a loader.
 *
 * Exports:
 *   REPO_ROOT                   the repository's root folder (with a trailing slash)
 *   DIST_CLI                    dist/cli/main.js
 *   cliArgs(): string[]         node's arguments to run the CLI: [DIST_CLI], after checking
 *                               that dist/ is not older than src/ (throws if it is).
 *                               TANDEM_RUN_SOURCES=1 in the environment: the TypeScript sources
 *                               through tsx instead (as before the build existed), for a
 *                               benchmark's before/after only (e.g. bench/failover.ts)
 *
 * `npm run build` (run by `prepare` at npm ci, and by test/run.sh before the tests) writes
 * dist/.built last. Stale means a source file (not a test), package.json or a tsconfig is newer
 * than that stamp: a test would then run old code, so it fails at once and says to build. Only
 * the stamp and the sources are compared (no rebuild here: two test files run at once).
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const DIST_CLI = join(REPO_ROOT, "dist/cli/main.js");
const STAMP = join(REPO_ROOT, "dist/.built");

function newestSource(dir: string): { file: string; mtimeMs: number } {
  let newest = { file: "", mtimeMs: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    const cand = e.isDirectory() ? newestSource(p) : e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? { file: p, mtimeMs: statSync(p).mtimeMs } : undefined;
    if (cand && cand.mtimeMs > newest.mtimeMs) newest = cand;
  }
  return newest;
}

let checked = false;

export function cliArgs(): string[] {
  if (process.env.TANDEM_RUN_SOURCES === "1") return ["--import", "tsx", join(REPO_ROOT, "src/cli/main.ts")];
  if (!checked) {
    let built: number;
    try {
      built = statSync(STAMP).mtimeMs;
    } catch {
      throw new Error(`${STAMP} is missing: run \`npm run build\` first (npm ci and npm test do it)`);
    }
    const candidates = [newestSource(join(REPO_ROOT, "src")), ...["package.json", "tsconfig.json", "tsconfig.build.json"].map((f) => ({ file: join(REPO_ROOT, f), mtimeMs: statSync(join(REPO_ROOT, f)).mtimeMs }))];
    const newest = candidates.reduce((a, b) => (b.mtimeMs > a.mtimeMs ? b : a));
    if (newest.mtimeMs > built) throw new Error(`dist/ is older than ${newest.file}: run \`npm run build\` (npm test does it) so that the test runs the current code`);
    checked = true;
  }
  return [DIST_CLI];
}
