/**
 * cli/queue-command.ts — `tandem queue list|show|hold|release|delete|flush`.
 *
 * Exports: runQueueCommand (returns the exit code).
 * A running node is reached through its admin API (--admin, or admin.listen of --config);
 * a stopped node's spool folder is changed directly (--spool, or the spool of --config when it
 * has no admin address). Changing a spool that a live node owns is refused (exit 75): the node's
 * queue manager would not see the change.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Spool, acquireSpoolLock, SpoolLockedError } from '../spool/index.ts';
import { listQueue, showQueued, type QueueListingRow } from '../qmgr/queue-listing.ts';
import { loadConfig } from '../config/load.ts';
import { ConfigError } from '../util/errors.ts';
import { EXIT } from './exit-codes.ts';
import { adminBase, adminCall } from './admin-client.ts';


interface QueueOpts { config?: string; admin?: string; token?: string; spool?: string; json?: boolean }
type Target = { type: 'http'; base: string; token?: string } | { type: 'spool'; dir: string };

export async function runQueueCommand(op: string, id: string | undefined, opts: QueueOpts): Promise<number> {
  let target: Target;
  try {
    target = await resolveTarget(opts);
  } catch (err) {
    console.error(`tandem queue: ${(err as Error).message}`);
    return err instanceof ConfigError ? EXIT.CONFIG : EXIT.USAGE;
  }
  return target.type === 'http' ? viaAdmin(op, id, target, !!opts.json) : viaSpool(op, id, target.dir, !!opts.json);
}

async function resolveTarget(opts: QueueOpts): Promise<Target> {
  const token = opts.token ?? process.env.TANDEM_ADMIN_TOKEN;
  if (opts.admin) return { type: 'http', base: adminBase(opts.admin), ...(token ? { token } : {}) };
  if (opts.spool) return { type: 'spool', dir: path.resolve(opts.spool) };
  if (opts.config) {
    const c = await loadConfig(opts.config);
    if (c.admin.listen) return { type: 'http', base: adminBase(c.admin.listen), ...(token ?? c.admin.token ? { token: token ?? c.admin.token } : {}) };
    return { type: 'spool', dir: path.join(c.spool.root, c.node.id) };
  }
  throw new Error('say which queue: --admin HOST:PORT (running node), --spool DIR (stopped node) or --config FILE');
}

async function viaAdmin(op: string, id: string | undefined, t: { base: string; token?: string }, json: boolean): Promise<number> {
  const routes: Record<string, [string, string]> = {
    list: ['GET', '/queue'], show: ['GET', `/queue/${encodeURIComponent(id ?? '')}`],
    hold: ['POST', `/queue/${encodeURIComponent(id ?? '')}/hold`], release: ['POST', `/queue/${encodeURIComponent(id ?? '')}/release`],
    delete: ['DELETE', `/queue/${encodeURIComponent(id ?? '')}`], flush: ['POST', '/queue/flush'],
  };
  const [method, p] = routes[op];
  const res = await adminCall(t.base, method, p, t.token, 60_000);
  if (!res.reachable) {
    console.error(`tandem queue: the node's admin API at ${t.base} is not reachable (${res.error}); is the node running? For a stopped node use --spool DIR`);
    return EXIT.UNAVAILABLE;
  }
  const body = res.body;
  if (res.status >= 400) {
    console.error(`tandem queue ${op}: ${body.error ?? `HTTP ${res.status}`}`);
    return res.status === 401 || res.status === 403 ? EXIT.USAGE : EXIT.FAILED;
  }
  if (json) console.log(JSON.stringify(body, null, 2));
  else if (op === 'list') printList(body.rows, body.total);
  else if (op === 'show') printShow(body);
  else if (op === 'flush') console.log(`${body.flushed} deferred message(s) scheduled for immediate delivery`);
  else console.log(`${body.queueId}: ${body.result}`);
  return EXIT.OK;
}

async function viaSpool(op: string, id: string | undefined, dir: string, json: boolean): Promise<number> {
  if (!existsSync(path.join(dir, 'incoming'))) {
    console.error(`tandem queue: ${dir} is not a Tandem spool folder (no incoming/ inside); give <spool root>/<node id>`);
    return EXIT.USAGE;
  }
  const spool = await Spool.open(dir, { nodeId: path.basename(dir) });
  if (op === 'list') {
    const { rows, total } = await listQueue(spool, Infinity);
    if (json) console.log(JSON.stringify({ rows, total }, null, 2));
    else printList(rows, total);
    return EXIT.OK;
  }
  if (op === 'show') {
    const m = await showQueued(spool, id!);
    if (!m) { console.error(`tandem queue show: no message ${id} in ${dir}`); return EXIT.FAILED; }
    if (json) console.log(JSON.stringify(m, null, 2));
    else printShow(m);
    return EXIT.OK;
  }
  if (op === 'flush') {
    console.log('the node is not running: deferred mail is tried as soon as it starts (nothing to do)');
    return EXIT.OK;
  }
  let lock;
  try {
    lock = await acquireSpoolLock(dir);
  } catch (err) {
    if (err instanceof SpoolLockedError) {
      console.error(`tandem queue ${op}: ${err.message}; use --admin to change a running node's queue`);
      return EXIT.TEMPFAIL;
    }
    throw err;
  }
  try {
    const state = await spool.find(id!);
    if (!state) { console.error(`tandem queue ${op}: no message ${id} in ${dir}`); return EXIT.FAILED; }
    if (op === 'hold') {
      if (state === 'hold') console.log(`${id}: already`);
      else { await spool.move(id!, state, 'hold'); console.log(`${id}: held`); }
    } else if (op === 'release') {
      if (state !== 'hold') console.log(`${id}: not-held`);
      else { await spool.move(id!, 'hold', 'deferred'); console.log(`${id}: released`); }
    } else if (op === 'delete') {
      await spool.remove(id!, state);
      console.log(`${id}: deleted`);
    }
    return EXIT.OK;
  } finally {
    await lock.release();
  }
}

function printList(rows: QueueListingRow[], total: number): void {
  if (rows.length === 0) { console.log('queue is empty'); return; }
  console.log(['QUEUE-ID', 'STATE', 'SIZE', 'ARRIVED', 'SENDER', 'PENDING/RCPTS', 'LAST PROBLEM'].join('\t'));
  for (const r of rows) {
    console.log([
      r.queueId, r.state, r.size, r.arrivedAt ? new Date(r.arrivedAt).toISOString() : '-',
      r.sender === undefined ? '-' : `<${r.sender}>`, r.recipients === undefined ? '-' : `${r.pending}/${r.recipients}`,
      r.error ?? r.lastReply ?? '',
    ].join('\t'));
  }
  console.log(`${total} message(s)${total > rows.length ? `, first ${rows.length} shown` : ''}`);
}

function printShow(m: any): void {
  const env = m.envelope;
  console.log(`queue id:  ${m.queueId} (${m.state})`);
  console.log(`arrived:   ${new Date(env.arrivedAt).toISOString()} from ${env.client.address} (${env.client.helo})`);
  console.log(`sender:    <${env.sender}>`);
  console.log(`message:   ${env.messageId}, ${m.size} bytes`);
  const done = new Map<number, any>(m.statuses.map((s: any) => [s.index, s]));
  env.recipients.forEach((r: any, i: number) => {
    const s = done.get(i);
    const orig = r.original !== r.address ? ` (for ${r.original})` : '';
    console.log(`recipient: <${r.address}>${orig}: ${s ? `${s.type} ${new Date(s.at).toISOString()} ${s.reply}` : 'pending'}`);
  });
  if (m.deferral) console.log(`deferred:  ${m.deferral.attempts} attempt(s), next ${new Date(m.deferral.nextAttemptAt).toISOString()}, last: ${m.deferral.lastReply}`);
  console.log('');
  console.log(m.headers);
}
