/**
 * test/harness/tandem.ts — run the `tandem` CLI to completion and write lookup tables, for
 * process-level tests (nodes themselves are started with node.ts).
 *
 * Exports: runCli, writeTables. The CLI runs compiled (dist/, see build.ts), as bin/tandem does.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';

import { cliArgs, REPO_ROOT as REPO } from './build.ts';

/** Run a tandem CLI command to completion: exit code, stdout, stderr. */
export function runCli(args: string[], opts: { stdin?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cliArgs(), ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tandem ${args.join(' ')} timed out\n${stdout}\n${stderr}`)); }, opts.timeoutMs ?? 30_000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.end(opts.stdin ?? '');
  });
}

/** Write table files into <dir>/tables and return their paths by name. */
export function writeTables(dir: string, tables: Record<string, string>): Record<string, string> {
  const tdir = path.join(dir, 'tables');
  mkdirSync(tdir, { recursive: true });
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(tables)) {
    out[name] = path.join(tdir, name);
    writeFileSync(out[name], text);
  }
  return out;
}
