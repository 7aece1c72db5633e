/**
 * directory.ts — benchmark routing lookups from the LDAP directory (cold and warm cache) against
 * the same data in table files.
 *
 *   node --import tsx bench/directory.ts [--users N=2000] [--lookups L=20000] [--concurrency C=16]
 *
 * Starts a real master + shadow (test/harness/slapd.ts), writes N mailboxes, N/10 aliases (two
 * targets each) and one domain as table files, loads them into the directory with
 * `tandem dir import`, then times L routing lookups — resolveRecipient of a random address
 * (mailbox or alias) plus routeAddress of each final address, C at a time — through:
 *   tables      the TableRouter over the table files (in memory);
 *   dir-nocache the directory router with cache_ttl 0: every key of every lookup read from a
 *               server (spread over master and shadow) — the worst case;
 *   dir-cold    cache_ttl 1h, a new router, one pass over every address: each address is
 *               looked up for the first time (only the domain and "*"-like keys are shared);
 *   dir-warm    the same router afterwards: every answer from the cache.
 * Prints lookups per second and the mean latency per lookup, then one JSON line
 * {"bench":"directory",...}. Exports nothing. Temporary folders are removed at the end.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load.ts';
import { createRouter } from '../src/node/wiring.ts';
import type { Router } from '../src/router/types.ts';
import { DirectoryRouter } from '../src/router/directory/index.ts';
import { startMasterShadow, directorySection, type LdapSetup } from '../test/harness/slapd.ts';
import { writeNodeConfig } from '../test/harness/node.ts';
import { runCli } from '../test/harness/tandem.ts';
import { trackProcesses } from '../test/harness/procs.ts';
import { machineInfo, runBenchmark } from './procstat.ts';

const { values } = parseArgs({
  options: { users: { type: 'string', default: '2000' }, lookups: { type: 'string', default: '20000' }, concurrency: { type: 'string', default: '16' } },
});
const users = Number(values.users);
const lookups = Number(values.lookups);
const concurrency = Number(values.concurrency);
const procs = trackProcesses();
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-bench-dir-'));

/** Time `count` lookups over `addresses`, `concurrency` at a time. */
async function timeLookups(router: Router, addresses: string[], count: number): Promise<{ perSecond: number; meanMs: number }> {
  let next = 0;
  let totalMs = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const address = addresses[next++ % addresses.length];
      const s = performance.now();
      const res = await router.resolveRecipient(address);
      if (res.type !== 'local') throw new Error(`${address}: ${JSON.stringify(res)}`);
      for (const a of res.addresses) await router.routeAddress(a);
      totalMs += performance.now() - s;
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { perSecond: Math.round(count / seconds), meanMs: Math.round((totalMs / count) * 1000) / 1000 };
}

function shuffled<T>(items: T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

async function routerWith(ldap: LdapSetup, tables: Record<string, string> | undefined, cacheTtl: string, name: string): Promise<Router> {
  const file = writeNodeConfig(path.join(dir, name), {
    local: { maildir_root: path.join(dir, 'mail') },
    ...(tables ? { tables } : { directory: directorySection(ldap, ['master', 'shadow'], { cache_ttl: cacheTtl, negative_cache_ttl: cacheTtl }) }),
  });
  return createRouter(await loadConfig(file));
}

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`machine: ${m.nproc} CPUs, ${m.cpuModel}, Node ${m.node}`);
  const ldap = await startMasterShadow();
  try {
    const mailboxes = Array.from({ length: users }, (_, i) => `user${i}@example.test`);
    const aliases = Array.from({ length: Math.ceil(users / 10) }, (_, i) => `alias${i}@example.test`);
    const tables = {
      local_domains: path.join(dir, 'local_domains'),
      virtual_mailboxes: path.join(dir, 'virtual_mailboxes'),
      aliases: path.join(dir, 'aliases'),
    };
    writeFileSync(tables.local_domains, 'example.test\n');
    writeFileSync(tables.virtual_mailboxes, mailboxes.map((a) => `${a} example.test/${a.split('@')[0]}/\n`).join(''));
    writeFileSync(tables.aliases, aliases.map((a, i) => `${a} ${mailboxes[(2 * i) % users]}, ${mailboxes[(2 * i + 1) % users]}\n`).join(''));

    const importConfig = writeNodeConfig(path.join(dir, 'import'), { tables, local: { maildir_root: path.join(dir, 'mail') }, directory: directorySection(ldap, ['master', 'shadow']) });
    const t0 = Date.now();
    for (const args of [['init'], ['import']]) {
      const r = await runCli(['dir', ...args, '--config', importConfig], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`tandem dir ${args[0]}: ${r.stderr}`);
    }
    console.log(`imported ${users + aliases.length + 1} entries with tandem dir import in ${Date.now() - t0} ms`);

    const addresses = shuffled([...mailboxes, ...aliases]);
    const results: Record<string, { perSecond: number; meanMs: number }> = {};
    const tableRouter = await routerWith(ldap, tables, '0s', 'tables');
    await timeLookups(tableRouter, addresses, Math.min(lookups, 2000));
    results.tables = await timeLookups(tableRouter, addresses, lookups);

    const nocache = await routerWith(ldap, undefined, '0s', 'nocache');
    results['dir-nocache'] = await timeLookups(nocache, addresses, Math.min(lookups, 3000));
    const status = (nocache as DirectoryRouter).pool.status();
    await (nocache as DirectoryRouter).close();

    const cached = await routerWith(ldap, undefined, '1h', 'cached');
    results['dir-cold'] = await timeLookups(cached, addresses, addresses.length);
    results['dir-warm'] = await timeLookups(cached, addresses, lookups);
    await (cached as DirectoryRouter).close();

    for (const [name, r] of Object.entries(results)) {
      console.log(`${name.padEnd(9)} ${String(r.perSecond).padStart(8)} lookups/s   mean ${r.meanMs} ms per lookup (resolve + route, ${concurrency} concurrent)`);
    }
    console.log(`reads per server without cache: ${status.map((s) => `${s.role} ${s.reads} (avg ${s.avgLatencyMs} ms)`).join(', ')}`);
    console.log(JSON.stringify({ bench: 'directory', users, lookups, concurrency, ...results, servers: status.map((s) => ({ role: s.role, reads: s.reads })) }));
  } finally {
    await ldap.stopAll();
  }
}

runBenchmark(main, { procs, dir });
