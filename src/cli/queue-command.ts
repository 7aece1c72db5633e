/**
 * cli/queue-command.ts — `tandem queue list|show|shape|hold|release|delete|flush|requeue`.
 *
 * A running node is reached through its admin API (--admin; or, from the config, the admin
 * address of --node-id in cluster.nodes, else admin.listen); a stopped node's spool folder is
 * changed directly (--spool, or the node's spool from the config when it has no admin address),
 * through the same actions as the queue manager (qmgr/queue-actions.ts), so that each writes its
 * tracking-log line: the tracking log is that of the config (--config or the default file).
 * Changing a spool that a live node owns is refused (exit 75): its queue manager would not see
 * the change.
 * Which messages: queue ids, `ALL`, and filters (--from, --to, --domain, --state, --older-than);
 * every filter given must match. `flush` with none flushes the whole queue. A bulk delete (ALL,
 * a filter, or more than one message) is confirmed: --yes, or asked on a terminal.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Spool, acquireSpoolLock, SpoolLockedError, isSafeQueueId, CorruptQueueFileError } from '../spool/index.ts';
import type { QueueState } from '../spool/types.ts';
import {
  listQueue, showQueued, queueShape, selectQueued, isEmptySelection, selectionToJson,
  deleteNeedsConfirmation, type QueueListingRow, type QueueSelection, applyQueueAction,
  requeueMessage, NOT_REQUEUED,
} from '../qmgr/index.ts';
import type { TandemConfig } from '../config/schema.ts';
import { nodeIdGiven } from '../config/load.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { parseDuration } from '../util/units.ts';
import { ConfigError, TempLookupError } from '../util/errors.ts';
import { EXIT } from './exit-codes.ts';
import { adminBase, adminCall } from './admin-client.ts';
import { configPath, loadCliConfig, type CliConfigOptions } from './cli-config.ts';

export type QueueOp = 'list' | 'show' | 'shape' | 'hold' | 'release' | 'delete' | 'flush' | 'requeue';
export interface QueueOpts extends CliConfigOptions {
  admin?: string; token?: string; spool?: string; json?: boolean;
  body?: boolean; yes?: boolean;
  from?: string; to?: string; domain?: string; state?: string; olderThan?: string;
}
type SpoolTarget = { type: 'spool'; dir: string; tracking?: string; config?: TandemConfig };
type Target = { type: 'http'; base: string; token?: string } | SpoolTarget;

class UsageError extends Error {}

export async function runQueueCommand(op: QueueOp, ids: string[], opts: QueueOpts): Promise<number> {
  let target: Target;
  let sel: QueueSelection;
  try {
    sel = selectionOf(op, ids, opts);
    target = await resolveTarget(opts);
  } catch (err) {
    console.error(`tandem queue ${op}: ${(err as Error).message}`);
    return err instanceof ConfigError ? EXIT.CONFIG : EXIT.USAGE;
  }
  return target.type === 'http' ? viaAdmin(op, sel, target, opts) : viaSpool(op, sel, target, opts);
}

function selectionOf(op: QueueOp, ids: string[], opts: QueueOpts): QueueSelection {
  for (const id of ids) if (id !== 'ALL' && !isSafeQueueId(id)) throw new UsageError(`${JSON.stringify(id)} is not a queue id (or ALL)`);
  const sel: QueueSelection = {
    ...(ids.includes('ALL') ? { all: true } : {}),
    ...(ids.some((i) => i !== 'ALL') ? { ids: ids.filter((i) => i !== 'ALL') } : {}),
    ...(opts.from !== undefined ? { sender: opts.from } : {}),
    ...(opts.to !== undefined ? { recipient: opts.to } : {}),
    ...(opts.domain !== undefined ? { domain: opts.domain } : {}),
  };
  if (opts.state !== undefined) {
    if (!['incoming', 'active', 'deferred', 'hold'].includes(opts.state)) throw new UsageError(`--state ${opts.state}: use incoming, active, deferred or hold`);
    sel.state = opts.state as QueueState;
  }
  if (opts.olderThan !== undefined) {
    try { sel.olderThanMs = parseDuration(opts.olderThan); } catch (e) { throw new UsageError(`--older-than: ${(e as Error).message}`); }
  }
  if (['hold', 'release', 'delete', 'requeue'].includes(op) && isEmptySelection(sel)) {
    throw new UsageError('say which messages: queue ids, ALL, or a filter (--from, --to, --domain, --state, --older-than)');
  }
  return sel;
}

async function resolveTarget(opts: QueueOpts): Promise<Target> {
  const token = opts.token ?? process.env.TANDEM_ADMIN_TOKEN;
  if (opts.admin) return { type: 'http', base: adminBase(opts.admin), ...(token ? { token } : {}) };
  const file = configPath(opts);
  const c = file ? await loadCliConfig(opts) : undefined;
  if (opts.spool) return { type: 'spool', dir: path.resolve(opts.spool), ...(c?.tracking.path ? { tracking: c.tracking.path } : {}), ...(c ? { config: c } : {}) };
  if (!c) throw new UsageError('say which queue: --admin HOST:PORT (running node), --spool DIR (stopped node) or --config FILE');
  const tokenOf = token ?? c.admin.token;
  const member = nodeIdGiven(c) ? c.cluster?.nodes.find((n) => n.id === c.node.id) : undefined;
  const admin = member?.admin ?? c.admin.listen;
  if (admin) return { type: 'http', base: adminBase(admin), ...(tokenOf ? { token: tokenOf } : {}) };
  if (!nodeIdGiven(c)) throw new UsageError(`${file} is a cluster file shared by every node and has no admin address: give --node-id ID (or TANDEM_NODE_ID)`);
  return { type: 'spool', dir: path.join(c.spool.root, c.node.id), ...(c.tracking.path ? { tracking: c.tracking.path } : {}), config: c };
}

/** Ask on a terminal; false when stdin is not one (scripts must say --yes). */
async function confirmed(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

async function confirmDelete(matched: number, opts: QueueOpts): Promise<boolean> {
  if (opts.yes) return true;
  if (await confirmed(`delete ${matched} message(s) from the queue, without DSN?`)) return true;
  console.error(`tandem queue delete: ${matched} message(s) match; nothing deleted. Add --yes to delete them${process.stdin.isTTY ? '' : ' (no terminal to ask on)'}`);
  return false;
}

async function viaAdmin(op: QueueOp, sel: QueueSelection, t: { base: string; token?: string }, opts: QueueOpts): Promise<number> {
  const json = !!opts.json;
  const call = (method: string, p: string, body?: unknown) => adminCall(t.base, method, p, t.token, 60_000, body);
  const one = sel.ids?.[0] ?? '';
  let res = op === 'list' ? await call('GET', '/queue')
    : op === 'show' ? await call('GET', `/queue/${encodeURIComponent(one)}${opts.body ? '?body=1' : ''}`)
      : op === 'shape' ? await call('GET', `/queue/shape${opts.state ? `?state=${encodeURIComponent(opts.state)}` : ''}`)
        : await call('POST', `/queue/${op}`, selectionToJson(sel));
  if (res.reachable && op === 'delete' && res.status === 409 && typeof res.body.matched === 'number') {
    if (!(await confirmDelete(res.body.matched, opts))) return EXIT.USAGE;
    res = await call('POST', '/queue/delete', { ...selectionToJson(sel), confirm: res.body.matched });
  }
  if (!res.reachable) {
    console.error(`tandem queue: the node's admin API at ${t.base} is not reachable (${res.error}); is the node running? For a stopped node use --spool DIR`);
    return EXIT.UNAVAILABLE;
  }
  const body = res.body;
  if (res.status >= 400) {
    console.error(`tandem queue ${op}: ${body.error ?? `HTTP ${res.status}`}`);
    return res.status === 401 || res.status === 403 || res.status === 400 ? EXIT.USAGE : EXIT.FAILED;
  }
  if (json) console.log(JSON.stringify(body, null, 2));
  else if (op === 'list') printList(body.rows, body.total);
  else if (op === 'show') printShow(body);
  else if (op === 'shape') printShape(body);
  else printResults(op, body);
  return exitOf(body);
}

/** 1 when ids were not queued; 75 when a requeue could not look up the tables now (try again). */
function exitOf(body: { missing?: string[]; results?: Array<{ result: string }> }): number {
  if (body.missing?.length) return EXIT.FAILED;
  return body.results?.some((r) => r.result.startsWith(NOT_REQUEUED)) ? EXIT.TEMPFAIL : EXIT.OK;
}

async function viaSpool(op: QueueOp, sel: QueueSelection, t: SpoolTarget, opts: QueueOpts): Promise<number> {
  const { dir } = t;
  const json = !!opts.json;
  if (!existsSync(path.join(dir, 'incoming'))) {
    console.error(`tandem queue: ${dir} is not a Tandem spool folder (no incoming/ inside); give <spool root>/<node id>`);
    return EXIT.USAGE;
  }
  const spool = await Spool.open(dir, { nodeId: path.basename(dir) });
  const print = (body: unknown, human: () => void) => (json ? console.log(JSON.stringify(body, null, 2)) : human());
  if (op === 'list') {
    const r = await listQueue(spool, Infinity);
    print(r, () => printList(r.rows, r.total));
    return EXIT.OK;
  }
  if (op === 'shape') {
    const r = await queueShape(spool, opts.state ? { state: opts.state as QueueState } : {});
    print(r, () => printShape(r));
    return EXIT.OK;
  }
  if (op === 'show') {
    const m = await showQueued(spool, sel.ids?.[0] ?? '', { body: !!opts.body });
    if (!m) { console.error(`tandem queue show: no message ${sel.ids?.[0]} in ${dir}`); return EXIT.FAILED; }
    print(m, () => printShow(m));
    return EXIT.OK;
  }
  let lock;
  try {
    lock = await acquireSpoolLock(dir);
  } catch (err) {
    if (err instanceof SpoolLockedError) {
      console.error(`tandem queue ${op}: the node is running (${err.message}); use --admin HOST:PORT (or --config) to change a running node's queue`);
      return EXIT.TEMPFAIL;
    }
    throw err;
  }
  try {
    if (op === 'flush') {
      console.log(`the node of ${dir} is not running: its queued mail is tried as soon as it starts (nothing to do now)`);
      return EXIT.OK;
    }
    if (op === 'requeue' && !t.config) {
      console.error(`tandem queue requeue: expanding aliases again needs the node's tables: give its config with --config FILE (or TANDEM_CONFIG)`);
      return EXIT.USAGE;
    }
    if (!t.tracking) console.error(`tandem queue ${op}: warning: no config names the tracking log, so this change is not recorded there; give the node's config with --config FILE (or TANDEM_CONFIG)`);
    const { selected, missing } = await selectQueued(spool, sel);
    if (op === 'delete' && deleteNeedsConfirmation(sel, selected.length) && selected.length > 0 && !(await confirmDelete(selected.length, opts))) return EXIT.USAGE;
    const tracking = new TrackingLog(t.tracking ?? '', path.basename(dir), (err) => console.error(`tandem queue: cannot write the tracking log ${t.tracking}: ${err.message}`));
    const results: Array<{ queueId: string; result: string }> = [];
    const router = op === 'requeue' ? await (await import('../node/wiring.ts')).createRouter(t.config!) : undefined;
    try {
      for (const m of selected) {
        if (!router) {
          results.push({ queueId: m.queueId, result: (await applyQueueAction(spool, tracking, op as 'hold' | 'release' | 'delete', m.queueId, m.state, 'cli')).result });
          continue;
        }
        try {
          const qf = await spool.read(m.queueId, m.state);
          results.push({ queueId: m.queueId, result: (await requeueMessage({ spool, router, tracking }, qf, 'cli', Date.now())).result });
        } catch (err) {
          if (!(err instanceof TempLookupError) && !(err instanceof CorruptQueueFileError)) throw err;
          results.push({ queueId: m.queueId, result: `${NOT_REQUEUED}: ${err.message}` });
        }
      }
    } finally {
      await router?.close();
      await tracking.sync();
      tracking.close();
    }
    const body = { matched: selected.length, results, missing };
    print(body, () => printResults(op, body));
    return exitOf(body);
  } finally {
    await lock.release();
  }
}

function printResults(op: QueueOp, body: { matched: number; flushed?: number; results?: Array<{ queueId: string; result: string }>; missing?: string[] }): void {
  for (const r of body.results ?? []) console.log(`${r.queueId}: ${r.result}`);
  for (const id of body.missing ?? []) console.error(`${id}: no such message in the queue`);
  if (op === 'flush') console.log(`${body.flushed ?? 0} message(s) scheduled for immediate delivery`);
  else if ((body.results?.length ?? 0) !== 1 || body.missing?.length) console.log(`${body.matched} message(s) matched`);
}

/**
 * Text from a queued message made safe for a terminal: control characters other than tab and
 * newline (escape sequences, carriage returns that hide what precedes them) shown as \xNN.
 */
export function safeText(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function printList(rows: QueueListingRow[], total: number): void {
  if (rows.length === 0) { console.log('queue is empty'); return; }
  console.log(['QUEUE-ID', 'STATE', 'SIZE', 'ARRIVED', 'SENDER', 'PENDING/RCPTS', 'LAST PROBLEM'].join('\t'));
  for (const r of rows) {
    console.log(safeText([
      r.queueId, r.state, r.size, r.arrivedAt ? new Date(r.arrivedAt).toISOString() : '-',
      r.sender === undefined ? '-' : `<${r.sender}>`, r.recipients === undefined ? '-' : `${r.pending}/${r.recipients}`,
      r.error ?? r.lastReply ?? '',
    ].join('\t')));
  }
  console.log(`${total} message(s)${total > rows.length ? `, first ${rows.length} shown` : ''}`);
}

function printShow(m: any): void {
  const env = m.envelope;
  const out: string[] = [];
  out.push(`queue id:  ${m.queueId} (${m.state})`);
  out.push(`arrived:   ${new Date(env.arrivedAt).toISOString()} from ${env.client.address} (${env.client.helo})`);
  out.push(`sender:    <${env.sender}>`);
  out.push(`message:   ${env.messageId}, ${m.size} bytes`);
  const done = new Map<number, any>(m.statuses.map((s: any) => [s.index, s]));
  env.recipients.forEach((r: any, i: number) => {
    const s = done.get(i);
    const orig = r.original !== r.address ? ` (for ${r.original})` : '';
    out.push(`recipient: <${r.address}>${orig}: ${s ? `${s.type} ${new Date(s.at).toISOString()} ${s.reply}` : 'pending'}`);
  });
  if (m.deferral) out.push(`deferred:  ${m.deferral.attempts} attempt(s), next ${new Date(m.deferral.nextAttemptAt).toISOString()}, last: ${m.deferral.lastReply}`);
  out.push('');
  out.push(m.message === undefined ? m.headers : `*** MESSAGE CONTENTS ***\n${m.message}\n*** END OF MESSAGE ***`);
  console.log(safeText(out.join('\n')));
}

function printShape(s: { buckets: string[]; rows: Array<{ domain: string; total: number; counts: number[] }>; total: number[] }): void {
  const head = ['', 'T', ...s.buckets];
  const rows = [head, ['TOTAL', String(s.total.reduce((a, b) => a + b, 0)), ...s.total.map(String)],
    ...s.rows.map((r) => [r.domain, String(r.total), ...r.counts.map(String)])];
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(safeText(r.map((c, i) => (i === 0 ? c.padStart(widths[i]) : c.padStart(widths[i] + 1))).join(' ')));
}
