/**
 * The bounds of the directory: timings in the config file: a timeout of 0 (which ldapts takes as
 * "no timeout", so a hung server would block lookups for ever) or an unbounded cache TTL is
 * refused at load, naming the key and the allowed range; the bounds themselves are accepted.
 * `tandem config check` against a real slapd whose base entry does not exist yet says to run
 * `tandem dir init` (not LDAP's "Code: 0x20"), and passes once it has run.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config/load.ts';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { writeNodeConfig } from './harness/node.ts';
import { SLAPD_AVAILABLE, startMasterShadow, directorySection, waitForEntry } from './harness/slapd.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-config-'));
const procs = trackProcesses();
after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;

function withDirectory(extra: string): Promise<unknown> {
  const file = path.join(dir, `c${n++}.yaml`);
  writeFileSync(file, `directory:\n  base_dn: dc=x\n  servers: [{ url: "ldap://127.0.0.1:389", role: master }]\n${extra}`);
  return loadConfig(file);
}

test('directory timeouts below 100ms (0 turns ldapts timeouts off) and TTLs above their bound are refused, naming the key', async () => {
  for (const [line, message] of [
    ['  operation_timeout: 0s\n', /directory\.operation_timeout: must be between 100ms and 60s \(got 0/],
    ['  connect_timeout: 50ms\n', /directory\.connect_timeout: must be between 100ms and 60s/],
    ['  connect_timeout: 2m\n', /directory\.connect_timeout: must be between 100ms and 60s/],
    ['  server_backoff: 0s\n', /directory\.server_backoff: must be between 100ms and 1h/],
    ['  cache_ttl: 2h\n', /directory\.cache_ttl: must be between 0s and 1h/],
    ['  negative_cache_ttl: 1d\n', /directory\.negative_cache_ttl: must be between 0s and 1h/],
    ['  max_stale: 30d\n', /directory\.max_stale: must be between 0s and 7d/],
  ] as const) {
    await assert.rejects(withDirectory(line), message, line);
  }
  const c = await withDirectory('  connect_timeout: 100ms\n  operation_timeout: 60s\n  cache_ttl: 1h\n  negative_cache_ttl: 0s\n  max_stale: 7d\n') as { directory: Record<string, number> };
  assert.deepEqual([c.directory.connect_timeout, c.directory.operation_timeout, c.directory.cache_ttl, c.directory.negative_cache_ttl, c.directory.max_stale],
    [100, 60_000, 3_600_000, 0, 7 * 86_400_000]);
});

test('config check on a directory without its base entry says to run tandem dir init; after it, the check passes', { skip: SLAPD_AVAILABLE ? false : 'slapd is not installed', timeout: 120_000 }, async () => {
  const ldap = await startMasterShadow(); // nothing seeded: no base entry on either server
  try {
    const config = writeNodeConfig(path.join(dir, 'fresh'), { directory: directorySection(ldap, ['master', 'shadow']) });
    const before = await runCli(['config', 'check', '--config', config]);
    assert.equal(before.code, 78, before.stdout + before.stderr);
    const out = before.stdout + before.stderr;
    assert.match(out, new RegExp(`FAIL directory server ${ldap.servers[0].url.replace(/[.]/g, '\\.')}: the base entry ${ldap.suffix} \\(directory\\.base_dn\\) does not exist there yet: run tandem dir init`));
    assert.doesNotMatch(out, /Code: 0x20/);
    const init = await runCli(['dir', 'init', '--config', config]);
    assert.equal(init.code, 0, init.stderr);
    await waitForEntry(ldap.servers[1].url, ldap.suffix, true); // the shadow has it by replication
    const afterInit = await runCli(['config', 'check', '--config', config]);
    assert.equal(afterInit.code, 0, afterInit.stdout + afterInit.stderr);
    assert.match(afterInit.stdout, /configuration OK/);
  } finally {
    await ldap.stopAll();
  }
});
