/**
 * auth-flood.ts — a legitimate message's time to 250 while N connections brute-force SMTP AUTH.
 *
 *   node --import tsx bench/auth-flood.ts [--connections 48] [--addresses 48] [--messages 30]
 *        [--hash-concurrency 1] [--failure-delay 1s] [--failure-rate 30] [--max-failures 3]
 *
 * Starts one node process (STARTTLS with a throw-away certificate from openssl, a password
 * table, a local Maildir), times `messages` messages sent one after another from 127.0.0.1
 * (connect → 250 after DATA, fsync included) without load, then again while `connections`
 * sessions from `addresses` loopback addresses send wrong passwords as fast as the replies
 * come (test/harness/auth-flood.ts). Prints median and p90 for both, the ratio, the AUTH
 * replies by code, then one JSON line {"bench":"auth-flood",...}. `--hash-concurrency 16
 * --failure-delay 0s --failure-rate 0 --max-failures 1000` is in effect the node before AUTH
 * throttling (unbounded hashing: libuv's pool has 4 threads).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { trackProcesses } from '../test/harness/procs.ts';
import { startNode, writeNodeConfig } from '../test/harness/node.ts';
import { runCli, writeTables } from '../test/harness/tandem.ts';
import { startAuthFlood, timeTo250, median } from '../test/harness/auth-flood.ts';
import { quantileOf } from './stats.ts';
import { machineInfo } from './procstat.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '48' }, addresses: { type: 'string', default: '48' }, messages: { type: 'string', default: '30' },
    'hash-concurrency': { type: 'string', default: '1' }, 'failure-delay': { type: 'string', default: '1s' }, 'failure-rate': { type: 'string', default: '30' },
    'max-failures': { type: 'string', default: '3' },
  },
});
const procs = trackProcesses();
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-bench-authflood-'));
const p90 = (xs: number[]): number => quantileOf(xs, 0.9);
const r1 = (x: number) => Math.round(x * 10) / 10;

try {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=tandem.test', '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`openssl: ${made.stderr}`);
  const hashed = await runCli(['passwd', 'hash'], { stdin: 'secret' });
  const passwords = path.join(dir, 'passwords');
  writeFileSync(passwords, `alice ${hashed.stdout.trim()}\n`);
  const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
  const node = await startNode({
    config: writeNodeConfig(dir, {
      node: { id: 'bench', hostname: 'tandem.test' },
      smtp: {
        tls: { cert, key }, auth_passwords: passwords, max_connections: 500,
        auth_limits: { hash_concurrency: Number(values['hash-concurrency']), failure_delay: values['failure-delay'], failure_rate: Number(values['failure-rate']), max_failures: Number(values['max-failures']) },
      },
      relay: { networks: ['127.0.0.1/32'] },
      local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
      tables: { virtual_mailboxes: tables.virtual_mailboxes },
    }),
    logFile: path.join(dir, 'tandem.out'),
  });
  const messages = Number(values.messages);
  await timeTo250(node.smtp.port, 3, 'bob@example.test'); // warm up
  const unloaded = await timeTo250(node.smtp.port, messages, 'bob@example.test');
  const from = Array.from({ length: Number(values.addresses) }, (_, i) => `127.0.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`);
  const flood = await startAuthFlood(node.smtp.port, { connections: Number(values.connections), from });
  await new Promise((r) => setTimeout(r, 3000)); // let the flood reach its pace
  const before = flood.attempts();
  const t0 = performance.now();
  const loaded = await timeTo250(node.smtp.port, messages, 'bob@example.test');
  const rate = (flood.attempts() - before) / ((performance.now() - t0) / 1000);
  await flood.stop();
  await node.stop();
  const result = {
    bench: 'auth-flood', connections: Number(values.connections), addresses: Number(values.addresses),
    hashConcurrency: Number(values['hash-concurrency']), failureDelay: values['failure-delay'], failureRate: Number(values['failure-rate']),
    unloadedMedianMs: r1(median(unloaded)), unloadedP90Ms: r1(p90(unloaded)), loadedMedianMs: r1(median(loaded)), loadedP90Ms: r1(p90(loaded)),
    ratio: r1(median(loaded) / median(unloaded)), authPerSecond: Math.round(rate), replies: Object.fromEntries(flood.replies()), machine: machineInfo(),
  };
  console.log(`time to 250 without load: median ${result.unloadedMedianMs} ms, p90 ${result.unloadedP90Ms} ms`);
  console.log(`time to 250 under ${result.connections} AUTH-flood connections: median ${result.loadedMedianMs} ms, p90 ${result.loadedP90Ms} ms (×${result.ratio}); ${result.authPerSecond} AUTH/s; replies ${JSON.stringify(result.replies)}`);
  console.log(JSON.stringify(result));
} finally {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
}
