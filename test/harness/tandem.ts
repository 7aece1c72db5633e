/**
 * test/harness/tandem.ts — start a real `tandem` node process for process-level tests.
 *
 * Exports: startNode, runCli, TandemProc, writeTables.
 * The node runs in its own process group (see procs.ts): killHard() is a machine crash
 * (no child survives), stop() is SIGTERM (graceful).
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnProcess, type Proc } from './procs.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = path.join(REPO, 'src/cli/main.ts');

export interface TandemProc {
  proc: Proc;
  smtpPort: number;
  adminUrl?: string;
}

/** Write `config` (YAML text) to <dir>/tandem.yaml and start `tandem start` on it. */
export async function startNode(dir: string, config: string, extraArgs: string[] = [], name = 'tandem'): Promise<TandemProc> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'tandem.yaml');
  writeFileSync(file, config);
  const proc = await spawnProcess(process.execPath, ['--import', 'tsx', CLI, 'start', '--config', file, ...extraArgs], {
    cwd: REPO,
    name,
    readyMatch: (j) => j.event === 'ready',
    readyTimeoutMs: 30_000,
    logFile: path.join(dir, `${name}.out`),
  });
  const ready = proc.readyLine!.json!;
  const smtpPort = Number(String(ready.smtp).split(':').pop());
  const adminUrl = ready.admin ? `http://${ready.admin}` : undefined;
  return { proc, smtpPort, ...(adminUrl ? { adminUrl } : {}) };
}

/** Run a tandem CLI command to completion: exit code, stdout, stderr. */
export function runCli(args: string[], opts: { stdin?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
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
