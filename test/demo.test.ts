/**
 * `tandem demo` prints the commands to try; the queue command it prints must reach the running
 * demo (it used to name the config file, which has no admin.listen, and failed with exit 75).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { trackProcesses, spawnProcess } from './harness/procs.ts';
import { freePort } from './harness/ports.ts';
import { REPO_ROOT } from './harness/node.ts';
import { cliArgs } from './harness/build.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

test('the queue command the demo prints works against the running demo', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-demo-'));
  const demo = await spawnProcess(process.execPath, [...cliArgs(), 'demo', '--dir', dir, '--listen', `127.0.0.1:${await freePort()}`, '--admin', `127.0.0.1:${await freePort()}`], {
    cwd: REPO_ROOT, name: 'tandem-demo', readyMatch: (j) => j.event === 'ready', readyTimeoutMs: 60_000,
  });
  const line = await demo.waitForLine((l) => /^\s*queue:\s/.test(l.text), 30_000);
  const command = line.text.replace(/^\s*queue:\s+/, '').trim().split(/\s+/);
  const { stdout } = await promisify(execFile)(command[0], command.slice(1), { cwd: REPO_ROOT });
  assert.match(stdout, /queue is empty/);
  await demo.stop();
});
