/**
 * track/search.ts — message tracking across the cluster: the query as given by the CLI, the
 * console or the admin API's query string, and one timeline per message merged from every
 * node's answer.
 *
 * A time is ISO 8601, epoch ms, or a duration back from now ("1h", "30m", "2d").
 * Merging: a message's events from all nodes, in time order; the cluster events (takeover,
 * handback, claim-broken) about the message's spool (the node id at the end of its queue id)
 * between its first and last event are put in, so a timeline reads "received on a → deferred →
 * takeover by b → delivered by b's secondary". A message's status is its latest outcome.
 * What can go wrong: a node that does not answer; its events are missing and `nodes` says so.
 */
import type { TrackQuery, IndexedEvent, TrackedMessage } from './index-db.ts';
import { parseDuration } from '../util/units.ts';
import { httpJson } from '../util/http-json.ts';

/** What one node's GET /track answers. */
export interface NodeAnswer { node: string; messages: TrackedMessage[]; clusterEvents: IndexedEvent[] }

export interface MessageTimeline {
  queueId: string;
  messageId?: string;
  sender?: string;
  recipients: string[];
  /** Latest per-message outcome: received, deferred, delivered, bounced, held, deleted, ... */
  status: string;
  first: string;
  last: string;
  nodes: string[];
  events: IndexedEvent[];
}

export interface ClusterTrackResult {
  messages: MessageTimeline[];
  /** Per node: "ok" or why its events are missing. */
  nodes: Record<string, string>;
}

/** A time bound: ISO date, epoch ms, or a duration back from now. */
function parseTime(text: string, now: number): number {
  const s = text.trim();
  if (/^\d{12,}$/.test(s)) return Number(s);
  if (/^\d+(\.\d+)?\s*(ms|s|m|h|d|w)$/i.test(s)) return now - parseDuration(s);
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new Error(`"${text}" is not a time (ISO 8601 like 2026-12-07T10:00Z, or a duration back from now like 1h)`);
  return t;
}

const OUTCOMES = ['received', 'routed', 'delivered', 'deferred', 'bounced', 'expired', 'deleted', 'held', 'released', 'dsn', 'corrupt', 'requeued'];

/** Query from string fields (URL query, CLI options); throws Error with a message for the user. */
export function parseTrackQuery(input: Record<string, unknown>, now = Date.now()): TrackQuery {
  const str = (k: string) => (typeof input[k] === 'string' && (input[k] as string).trim() ? (input[k] as string).trim() : undefined);
  const q: TrackQuery = {};
  const queueId = str('queueId') ?? str('id');
  if (queueId) q.queueId = queueId;
  const messageId = str('messageId');
  if (messageId) q.messageId = messageId;
  const from = str('from');
  if (from) q.from = from;
  const to = str('to');
  if (to) q.to = to;
  const outcome = str('outcome');
  if (outcome) {
    if (!OUTCOMES.includes(outcome)) throw new Error(`outcome must be one of ${OUTCOMES.join(', ')}`);
    q.outcome = outcome;
  }
  const since = str('since');
  if (since) q.since = parseTime(since, now);
  const until = str('until');
  if (until) q.until = parseTime(until, now);
  const limit = str('limit') ?? (typeof input.limit === 'number' ? String(input.limit) : undefined);
  if (limit) {
    if (!/^\d+$/.test(limit) || Number(limit) < 1) throw new Error('limit must be a positive number');
    q.limit = Math.min(Number(limit), 1000);
  }
  return q;
}

/** The query as a query string for a peer's GET /track (times as epoch ms). */
export function trackQueryString(q: TrackQuery): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v));
  return p.toString();
}

const FINAL = new Set(['delivered', 'bounced', 'expired', 'deleted', 'deferred', 'held', 'released', 'received', 'corrupt', 'requeued']);

/** One timeline per message from every node's answer (see the header). */
export function mergeTimelines(answers: NodeAnswer[], limit = 100): MessageTimeline[] {
  const byId = new Map<string, IndexedEvent[]>();
  for (const a of answers) for (const m of a.messages) {
    const list = byId.get(m.queueId) ?? [];
    list.push(...m.events);
    byId.set(m.queueId, list);
  }
  const cluster = answers.flatMap((a) => a.clusterEvents).filter((e) => ['takeover', 'handback', 'claim-broken'].includes(e.event));
  const out: MessageTimeline[] = [];
  for (const [queueId, events] of byId) {
    events.sort((x, y) => Date.parse(x.t) - Date.parse(y.t));
    const first = Date.parse(events[0].t);
    const last = Date.parse(events[events.length - 1].t);
    const spool = queueId.slice(queueId.lastIndexOf('.') + 1);
    const about = cluster.filter((e) => e.spool === spool && Date.parse(e.t) >= first && Date.parse(e.t) <= last);
    const all = [...events, ...about].sort((x, y) => Date.parse(x.t) - Date.parse(y.t));
    const recipients = new Set<string>();
    for (const e of events) {
      if (e.event === 'dsn') continue;
      if (typeof e.recipient === 'string') recipients.add(e.recipient);
      if (Array.isArray(e.recipients)) for (const r of e.recipients) recipients.add(String(r));
    }
    const withField = (k: string) => events.find((e) => typeof e[k] === 'string')?.[k] as string | undefined;
    const status = [...events].reverse().find((e) => FINAL.has(e.event))?.event ?? events[events.length - 1].event;
    out.push({
      queueId, recipients: [...recipients], status, events: all,
      ...(withField('messageId') ? { messageId: withField('messageId') } : {}),
      ...(withField('sender') !== undefined ? { sender: withField('sender') } : {}),
      first: events[0].t, last: events[events.length - 1].t,
      nodes: [...new Set(events.map((e) => (e.secondary ? `${e.node} (secondary for ${e.secondary})` : e.node)))],
    });
  }
  return out.sort((x, y) => Date.parse(y.last) - Date.parse(x.last)).slice(0, limit);
}

/**
 * Ask every node (ours answered by `local`, the others over their admin API) and merge.
 * `peers`: the other nodes' admin base URLs (undefined: no admin address configured).
 */
export async function searchCluster(q: TrackQuery, local: { node: string; answer: () => Promise<NodeAnswer> }, peers: Array<{ id: string; base?: string }>, auth: { token?: string; ca?: Buffer }): Promise<ClusterTrackResult> {
  const nodes: Record<string, string> = {};
  const answers: NodeAnswer[] = [];
  const qs = trackQueryString(q);
  await Promise.all([
    local.answer().then((a) => { answers.push(a); nodes[local.node] = 'ok'; }, (err) => { nodes[local.node] = `search failed: ${(err as Error).message}`; }),
    ...peers.map(async (p) => {
      if (!p.base) { nodes[p.id] = 'no admin address in cluster.nodes'; return; }
      const r = await httpJson(`${p.base}/track?${qs}`, { ...(auth.token ? { token: auth.token } : {}), ...(auth.ca ? { ca: auth.ca } : {}), timeoutMs: 5000 });
      if (r.ok && r.status === 200) { answers.push(r.body as NodeAnswer); nodes[p.id] = 'ok'; } else nodes[p.id] = r.ok ? `HTTP ${r.status}: ${r.body?.error ?? ''}` : `unreachable (${r.error})`;
    }),
  ]);
  return { messages: mergeTimelines(answers, q.limit ?? 100), nodes };
}
