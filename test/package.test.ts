/**
 * Installable as a command: `npm pack`, then `npm install -g` of the tarball (into a temporary
 * prefix, dependencies from the npm cache) gives a `tandem` that runs from anywhere: --version,
 * and `config check` of a small config. The tarball carries the LICENSE and no tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './harness/node.ts';

const run = promisify(execFile);

test('npm pack + npm install -g of the tarball gives a working tandem command', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-pack-'));
  const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  const files = (JSON.parse(packed)[0].files as Array<{ path: string }>).map((f) => f.path);
  assert.ok(files.includes('LICENSE') && files.includes('bin/tandem') && files.includes('src/cli/main.ts'), files.join(' '));
  assert.ok(!files.some((f) => f.startsWith('test/') || f.endsWith('.test.ts')), 'no tests in the package');
  const tarball = path.join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
  const prefix = path.join(dir, 'prefix');
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
  const tandem = path.join(prefix, 'bin', 'tandem');
  const version = await run(tandem, ['--version'], { cwd: dir });
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version);
  const config = path.join(dir, 'tandem.yaml');
  writeFileSync(config, `node: { id: packed }\nspool: { root: ${path.join(dir, 'spool')} }\n`);
  const check = await run(tandem, ['config', 'check', config], { cwd: os.tmpdir() });
  assert.match(check.stdout, /configuration OK \(node packed/);
});
