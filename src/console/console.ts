/**
 * console/console.ts — the web console, served by the admin server under /console.
 *
 * Pages (server-rendered HTML, one small script for the live cluster view and the charts):
 *   /console/login                      admin token or a console user (auth.ts)
 *   /console/cluster                    nodes, states, heartbeat ages, queues, who delivers each
 *                                       spool at which epoch; live: /console/cluster/stream (SSE, 0.5 s)
 *   /console/queues[?state&from&to&page] counts, qshape, the message list; /console/queues/:id a message
 *   /console/operations                 drain/resume, fence/unfence, handback
 *   /console/charts                     traffic per minute and queue depth (uPlot); data: /console/charts/data
 *   /console/tracking?…                 tracking search over the cluster, one timeline per message
 *   /console/confirm?action&node&id     what an action will do, and a button to do it
 *   /console/confirm?action=bulk-<op>&state&from&to   the same for every message of this node
 *                                       matching the Queues filter, with the count the node
 *                                       finds (its bulk route with dryRun)
 *   POST /console/do                    do it (operator role, CSRF token); a bulk action sends
 *                                       the confirmed count and is refused if the match changed
 * One code path per action: POST /console/do calls the same admin API route as the CLI (on
 * this node by fastify's inject, on another node over HTTP(S) with the admin token), and the
 * read views call GET /cluster, /queue/:id and /track the same way.
 * Security: no session → 303 to the login page (401 JSON for the stream); every POST but the
 * login needs the session's CSRF token; actions need the operator role (403 otherwise, whatever
 * the page showed); headers: a strict Content-Security-Policy (same-origin scripts, styles,
 * fetches; no inline code; no frames), nosniff, no referrer, no caching. Assets are served from
 * this package and node_modules (uPlot): nothing comes from another host.
 * Without an admin token and without console users the console is off (404 saying why).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AdminNode } from '../admin/admin-node.ts';
import type { ClusterStatus } from '../cluster/index.ts';
import { ConsoleAuth, type Session } from './auth.ts';
import { html, page, ago, when, type Html } from './html.ts';
import { QueueView, filterSelection } from './queue-view.ts';
import { TrafficHistory } from './history.ts';
import { mergeClusterViews } from '../cli/cluster-command.ts';
import { clusterPeers } from '../track/track-routes.ts';
import { httpJson } from '../util/http-json.ts';
import type { MessageTimeline } from '../track/search.ts';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const ASSET_DIR = fileURLToPath(new URL('./assets/', import.meta.url));
const require = createRequire(import.meta.url);
const UPLOT_DIR = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
const ASSETS: Record<string, { file: string; type: string }> = {
  'console.css': { file: path.join(ASSET_DIR, 'console.css'), type: 'text/css; charset=utf-8' },
  'console.js': { file: path.join(ASSET_DIR, 'console.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.iife.min.js': { file: path.join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: path.join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/** How often the live cluster view is sent (a takeover shows within this of the nodes knowing it). */
const STREAM_MS = 500;

type Call = { status: number; body: any } | { status: 0; body: { error: string } };

interface ActionSpec {
  /** Which node it goes to: this one (a message), the one named, or the claim holder. */
  method: 'POST' | 'DELETE';
  path: (id: string) => string;
  needsId: boolean;
  label: string;
  explain: (node: string, id: string) => string;
  back: (id: string) => string;
  danger?: boolean;
}

const ACTIONS: Record<string, ActionSpec> = {
  hold: { method: 'POST', path: (id) => `/queue/${encodeURIComponent(id)}/hold`, needsId: true, label: 'Hold', back: (id) => `/console/queues/${encodeURIComponent(id)}`,
    explain: (n, id) => `Message ${id} on node ${n} stops being delivered and moves to hold/ until it is released. Nothing is sent meanwhile (an attempt under way finishes first, then the message is held).` },
  release: { method: 'POST', path: (id) => `/queue/${encodeURIComponent(id)}/release`, needsId: true, label: 'Release', back: (id) => `/console/queues/${encodeURIComponent(id)}`,
    explain: (n, id) => `Message ${id} on node ${n} leaves hold/ and is delivered now (its recipients not yet done).` },
  delete: { method: 'DELETE', path: (id) => `/queue/${encodeURIComponent(id)}`, needsId: true, label: 'Delete', back: () => '/console/queues', danger: true,
    explain: (n, id) => `Message ${id} is deleted from node ${n}'s spool for good. No DSN is sent to its sender, and this cannot be undone.` },
  flush: { method: 'POST', path: (id) => `/queue/${encodeURIComponent(id)}/flush`, needsId: true, label: 'Flush', back: (id) => `/console/queues/${encodeURIComponent(id)}`,
    explain: (n, id) => `Message ${id} on node ${n} is tried now (its recipients not yet done), ignoring its backoff and the memory of destinations unreachable a moment ago. Other messages wait for their own retry time.` },
  drain: { method: 'POST', path: () => '/drain', needsId: false, label: 'Drain', back: () => '/console/operations',
    explain: (n) => `Node ${n} leaves the load balancer: /health answers 503 "draining" and new SMTP sessions get 421. Mail already queued goes on being delivered. Undo with Resume.` },
  resume: { method: 'POST', path: () => '/resume', needsId: false, label: 'Resume', back: () => '/console/operations',
    explain: (n) => `Node ${n} takes new mail again: /health answers 200 and the balancer sends it connections.` },
  fence: { method: 'POST', path: () => '/cluster/fence', needsId: false, label: 'Fence', back: () => '/console/operations', danger: true,
    explain: (n) => `Node ${n} is taken out by hand: it refuses mail (421) and stops delivering. After cluster.dead_after its partner claims its spool and delivers it with a secondary process. Undo with Unfence (its spool then comes back by handback).` },
  unfence: { method: 'POST', path: () => '/cluster/unfence', needsId: false, label: 'Unfence', back: () => '/console/operations',
    explain: (n) => `Node ${n} is let back in: it resumes once its disk heartbeat is renewed. A spool taken over meanwhile comes back to it by handback (automatic with cluster.auto_handback).` },
  handback: { method: 'POST', path: (id) => `/cluster/handback/${encodeURIComponent(id)}`, needsId: true, label: 'Hand back', back: () => '/console/operations',
    explain: (n, id) => `Node ${n} stops its secondary process for spool ${id} once the deliveries in flight are recorded, and releases its claim: node ${id} delivers its own spool again.` },
};

/** Actions on every message of this node that matches the Queues page's filter (POST /queue/<op>). */
const BULK: Record<string, { label: string; does: string; danger?: boolean }> = {
  hold: { label: 'Hold', does: 'stop being delivered and move to hold/ until released (an attempt under way finishes first)' },
  release: { label: 'Release', does: 'leave hold/ and are delivered now (only those on hold change)' },
  flush: { label: 'Flush', does: 'are tried now, past their backoff and the memory of unreachable destinations (messages on hold stay held)' },
  delete: { label: 'Delete', does: 'are deleted for good: no DSN is sent to their senders, and this cannot be undone', danger: true },
};

/**
 * The Queues page's filter as the admin API's selection (qmgr/queue-listing.ts), and in words.
 * Sender and recipient: an address (exact; `<>` the null sender) or a domain (`@d` or `d`);
 * a recipient counts while still pending (one already delivered does not match).
 */
function bulkSelection(f: Record<string, string | undefined>): { sel: Record<string, unknown>; words: string } {
  const sel: Record<string, unknown> = { ...filterSelection(f) };
  const words: string[] = [];
  if (sel.state) words.push(`in state ${sel.state}`);
  if (sel.sender !== undefined) words.push(sel.sender === '<>' ? 'from the null sender <>' : `from ${sel.sender}`);
  if (sel.senderDomain !== undefined) words.push(`from a sender in ${sel.senderDomain}`);
  if (sel.recipient !== undefined) words.push(`for ${sel.recipient} (still pending)`);
  if (sel.domain !== undefined) words.push(`with a recipient in ${sel.domain} still pending`);
  if (!words.length) sel.all = true;
  return { sel, words: words.length ? `every message ${words.join(', ')}` : 'every message in the queue' };
}
const FILTER_KEYS = ['state', 'from', 'to'] as const;
const filterQuery = (f: Record<string, string | undefined>) => new URLSearchParams(Object.fromEntries(FILTER_KEYS.filter((k) => f[k]).map((k) => [k, f[k]!])));
/** The outcome of a bulk action in a line: "4 message(s): 3 held, 1 already" / "12 of 12 message(s) to be tried now". */
function bulkSummary(op: string, body: any): string {
  if (op === 'flush') return `${body.flushed} of ${body.matched} message(s) to be tried now`;
  const by = new Map<string, number>();
  for (const r of (body.results ?? []) as Array<{ result: string }>) by.set(r.result, (by.get(r.result) ?? 0) + 1);
  return `${body.matched} message(s): ${[...by].map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}`;
}

/**
 * A timeline as people read it: the `routed` line before each attempt's outcome is left out
 * (the outcome names the next hop), and repeated identical deferrals become one line "×N".
 */
function collapse(events: MessageTimeline['events']): Array<{ e: MessageTimeline['events'][number]; times: number; until: string }> {
  const out: Array<{ e: MessageTimeline['events'][number]; times: number; until: string }> = [];
  events.forEach((e, i) => {
    const next = events[i + 1];
    if (e.event === 'routed' && next && next.node === e.node && ['delivered', 'deferred', 'bounced'].includes(next.event)) return;
    const prev = out[out.length - 1];
    if (prev && e.event === 'deferred' && prev.e.event === 'deferred' && prev.e.node === e.node && prev.e.recipient === e.recipient && prev.e.reply === e.reply) {
      prev.times++;
      prev.until = e.t;
      return;
    }
    out.push({ e, times: 1, until: e.t });
  });
  return out;
}

export async function registerConsole(app: FastifyInstance, node: AdminNode): Promise<void> {
  const c = node.config;
  const self = c.node.id;
  const auth = new ConsoleAuth(c.admin);
  const secure = !!c.admin.tls;
  const { peers, auth: peerAuth } = clusterPeers(c);
  const queues = new QueueView(() => node.qmgr);
  const history = new TrafficHistory(node.metrics.registry, () => Object.values(node.qmgr?.counts() ?? {}).reduce((a, b) => a + b, 0));
  /** Live streams open: ended before the server closes (else close() would wait for the browsers). */
  const streams = new Set<import('node:http').ServerResponse>();
  app.addHook('preClose', async () => { for (const res of streams) res.end(); });
  app.addHook('onClose', async () => { history.close(); });
  const bearer = c.admin.token ? { authorization: `Bearer ${c.admin.token}` } : {};

  /** An admin API call on this node (inject: same route, same checks) or on a peer. */
  async function call(target: string, method: string, url: string, body?: Record<string, unknown>): Promise<Call> {
    if (target === self) {
      const r = await app.inject({ method: method as 'GET', url, headers: bearer, remoteAddress: '127.0.0.1', ...(body ? { payload: body } : {}) });
      let answer: any;
      try { answer = r.json(); } catch { answer = { error: r.body }; }
      return { status: r.statusCode, body: answer };
    }
    const peer = peers.find((p) => p.id === target);
    if (!peer?.base) return { status: 0, body: { error: `node ${target} has no admin address in cluster.nodes` } };
    const r = await httpJson(peer.base + url, { method, ...peerAuth, timeoutMs: method === 'GET' ? 3000 : 90_000, ...(body ? { body } : {}) });
    return r.ok ? { status: r.status, body: r.body } : { status: 0, body: { error: `node ${target} unreachable (${r.error})` } };
  }

  async function clusterView() {
    if (!c.cluster) return undefined;
    const views = new Map<string, ClusterStatus>();
    const errors = new Map<string, string>();
    await Promise.all(c.cluster.nodes.map(async (n) => {
      const r = await call(n.id, 'GET', '/cluster');
      if (r.status === 200) views.set(n.id, r.body); else errors.set(n.id, r.status ? `HTTP ${r.status}` : r.body.error);
    }));
    return { ...mergeClusterViews(c.cluster.nodes, views, errors), views };
  }

  await app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 65536 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    scope.addHook('onRequest', async (_req, reply) => {
      reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer').header('x-frame-options', 'DENY').header('cache-control', 'no-store');
      if (!auth.enabled) return reply.code(404).type('text/plain').send('The console is off: set admin.token or admin.console.users (docs/console.md).');
    });

    const sessionOf = (req: FastifyRequest) => auth.session(req.headers.cookie);
    /** The session, or a redirect to the login page (then undefined). */
    const need = (req: FastifyRequest, reply: FastifyReply): Session | undefined => {
      const s = sessionOf(req);
      if (!s) void reply.code(303).header('location', `/console/login?next=${encodeURIComponent(req.url)}`).send();
      return s;
    };
    const send = (reply: FastifyReply, text: string, code = 200) => reply.code(code).type('text/html; charset=utf-8').send(text);
    const frame = (s: Session, title: string, nav: string, body: Html, extra: { scripts?: string[]; flash?: string; error?: string } = {}) =>
      page({ title, nav, node: self, user: { name: s.user, role: s.role, csrf: s.csrf }, ...extra }, body);
    const q = (req: FastifyRequest) => req.query as Record<string, string | undefined>;

    scope.get('/assets/:file', async (req, reply) => {
      const a = ASSETS[(req.params as { file: string }).file];
      if (!a) return reply.code(404).send();
      return reply.type(a.type).header('cache-control', 'max-age=3600').send(readFileSync(a.file));
    });

    scope.get('/', async (_req, reply) => reply.code(303).header('location', '/console/cluster').send());

    const loginPage = (next: string, error?: string) => page({ title: 'Log in', node: self, ...(error ? { error } : {}) }, html`
<form method="post" action="/console/login" class="login">
<input type="hidden" name="next" value="${next}">
<label>User <input name="user" autocomplete="username" placeholder="admin (for the admin token)"></label>
<label>Password or admin token <input name="password" type="password" autocomplete="current-password" required></label>
<button>Log in</button></form>`);
    scope.get('/login', async (req, reply) => send(reply, loginPage(q(req).next ?? '/console/cluster')));
    scope.post('/login', async (req, reply) => {
      const b = (req.body ?? {}) as Record<string, string>;
      const next = typeof b.next === 'string' && b.next.startsWith('/console/') && !b.next.startsWith('//') ? b.next : '/console/cluster';
      const user = String(b.user ?? '').trim().slice(0, 64) || 'admin'; // names are at most 64 characters; longer is a wrong user
      const r = await auth.login(user, String(b.password ?? ''), req.ip);
      if (r.ok) {
        node.metrics.consoleLogin('ok');
        node.logger.info({ event: 'console-login', user, client: req.ip }, `console: ${user} logged in from ${req.ip}`);
        return reply.code(303).header('set-cookie', auth.cookie(r.session, secure)).header('location', next).send();
      }
      node.metrics.consoleLogin(r.checked ? 'failed' : 'throttled');
      const wait = r.blocked ? Math.ceil(r.blocked.retryAfterMs / 1000) : 0;
      const why = r.blocked ? `too many failed logins ${r.blocked.by === 'user' ? `for user ${user}` : `from ${req.ip}`}; try again in ${wait} s` : '';
      if (r.blocked) reply.header('retry-after', String(wait));
      if (r.checked) {
        if (r.blocked) node.metrics.consoleLoginBlocked(r.blocked.by, r.blocked.lockout);
        node.logger.warn({ event: 'console-login-failed', user, client: req.ip, ...(r.blocked ? { blocked: r.blocked.by, lockout: r.blocked.lockout, retryAfterS: wait } : {}) },
          `console: failed login as ${user} from ${req.ip}${r.blocked ? `; ${r.blocked.lockout ? 'locked out' : 'delayed'}: ${why}` : ''}`);
        return send(reply, loginPage(next, `Wrong user or password.${r.blocked ? ` ${why[0].toUpperCase()}${why.slice(1)}.` : ''}`), 401);
      }
      // counted, but logged at debug only: a flood of refused attempts would flood the log
      node.logger.debug({ event: 'console-login-throttled', user, client: req.ip, blocked: r.blocked!.by, retryAfterS: wait }, `console: login as ${user} from ${req.ip} refused unchecked: ${why}`);
      return send(reply, loginPage(next, `Refused: ${why}.`), 429);
    });
    scope.post('/logout', async (req, reply) => {
      const s = sessionOf(req);
      if (s && auth.checkCsrf(s, (req.body as Record<string, string> | undefined)?._csrf)) auth.logout(s);
      return reply.code(303).header('set-cookie', auth.cookie(undefined, secure)).header('location', '/console/login').send();
    });

    // ---- Cluster ----
    const clusterFragment = async (): Promise<Html> => {
      const v = await clusterView();
      if (!v) {
        return html`<p>This node is not in a cluster.</p><table><tr><th>Node</th><th>State</th><th>Queue</th></tr>
<tr><td>${self}</td><td><span class="st st-${node.health()}">${node.health()}</span></td><td>${Object.values(node.qmgr.counts()).reduce((a, b) => a + b, 0)}</td></tr></table>`;
      }
      const counters = [...v.views.values()].reduce((a, x) => ({ takeovers: a.takeovers + x.counters.takeovers, handbacks: a.handbacks + x.counters.handbacks }), { takeovers: 0, handbacks: 0 });
      return html`<table class="nodes"><thead><tr><th>Node</th><th>Site</th><th>State</th><th>Net heartbeat</th><th>Disk heartbeat</th><th>Queue</th><th>Own spool</th><th>Secondaries</th></tr></thead><tbody>
${v.nodes.map((n) => html`<tr data-node="${n.id}"><td>${n.id}${n.id === self ? ' (this node)' : ''}</td><td>${n.site}</td><td><span class="st st-${n.status}" data-state="${n.status}">${n.status}</span>${n.error ? html` <small>${n.error}</small>` : ''}</td>
<td>${ago(n.netAgeMs)}</td><td>${ago(n.diskAgeMs)}</td><td>${n.queue ?? '-'}</td><td>${n.ownSpool ?? '-'}</td>
<td>${n.secondaries.length ? n.secondaries.map((s) => html`<div>spool ${s.spool}, epoch ${s.epoch}, ${Object.values(s.queue).reduce((a, b) => a + b, 0)} queued${s.ready ? '' : ' (starting)'}</div>`) : '-'}</td></tr>`)}
</tbody></table>
<h2>Spools</h2>
<table class="spools"><thead><tr><th>Spool</th><th>Delivered by</th><th>Epoch</th><th>Since</th><th>Last change</th></tr></thead><tbody>
${v.spools.map((s) => html`<tr data-spool="${s.spool}" data-deliverer="${s.deliverer}"><td>${s.spool}</td>
<td>${s.deliverer === s.spool ? html`${s.deliverer} <small>(own node)</small>` : html`<strong>${s.deliverer}</strong> <small>(takeover)</small>`}</td><td>${s.epoch}</td><td>${when(s.at)}</td>
<td>${s.epoch === 0 ? '-' : s.kind === 'claim' ? `taken over by ${s.by}${s.reason ? `: ${s.reason}` : ''}` : s.by === s.spool ? `joined (epoch ${s.epoch})` : `handed back by ${s.by}${s.reason ? `: ${s.reason}` : ''}`}</td></tr>`)}
</tbody></table>
<p class="muted">Takeovers ${counters.takeovers}, handbacks ${counters.handbacks} (since the answering nodes started) · updated ${when(Date.now())}</p>`;
    };
    scope.get('/cluster', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      return send(reply, frame(s, 'Cluster', 'cluster', html`<div id="cluster-live" data-stream="/console/cluster/stream">${await clusterFragment()}</div>`, { scripts: ['console.js'] }));
    });
    scope.get('/cluster/stream', async (req, reply) => {
      if (!sessionOf(req)) return reply.code(401).send({ error: 'no session' });
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'content-security-policy': CSP });
      let open = true;
      const tick = async () => {
        if (!open || res.writableEnded) return;
        if (!sessionOf(req)) { res.write('event: expired\ndata: login\n\n'); res.end(); open = false; return; }
        try {
          const text = (await clusterFragment()).text;
          if (open && !res.writableEnded) res.write(`data: ${text.split('\n').join('\ndata: ')}\n\n`);
        } catch { /* next tick */ }
        if (open) timer = setTimeout(() => void tick(), STREAM_MS);
      };
      let timer = setTimeout(() => void tick(), 0);
      streams.add(res);
      req.raw.on('close', () => { open = false; clearTimeout(timer); streams.delete(res); });
    });

    // ---- Queues ----
    scope.get('/queues', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      const f = q(req);
      const filter = { ...(f.state ? { state: f.state } : {}), ...(f.from ? { from: f.from } : {}), ...(f.to ? { to: f.to } : {}), page: Number(f.page ?? 1) || 1 };
      const list = queues.list(filter);
      const shape = queues.qshape();
      const v = await clusterView();
      const counts = node.qmgr.counts();
      const link = (p: number) => `/console/queues?${new URLSearchParams({ ...(f.state ? { state: f.state } : {}), ...(f.from ? { from: f.from } : {}), ...(f.to ? { to: f.to } : {}), page: String(p) })}`;
      return send(reply, frame(s, 'Queues', 'queues', html`
<section class="cards">${Object.entries(counts).map(([k, n]) => html`<div class="card"><div class="n" data-count="${k}">${n}</div><div>${k}</div></div>`)}</section>
${v ? html`<h2>Cluster</h2><table><tr><th>Node</th><th>State</th><th>Own queue</th><th>Secondaries (spool: queued)</th></tr>
${v.nodes.map((n) => html`<tr><td>${n.id}</td><td><span class="st st-${n.status}">${n.status}</span></td><td>${n.queue ?? '-'}</td><td>${n.secondaries.map((x) => `${x.spool}: ${Object.values(x.queue).reduce((a, b) => a + b, 0)}`).join(', ') || '-'}</td></tr>`)}</table>` : ''}
<h2>By destination and age <small>(qshape: messages with recipients pending there, by age; as of ${when(shape.at)}${shape.complete ? '' : '; the queue is still being read'})</small></h2>
<table class="qshape"><tr><th>Domain</th><th>Total</th>${shape.buckets.map((b) => html`<th>${b}</th>`)}</tr>
${shape.rows.map((r) => html`<tr><td><a href="/console/queues?to=${encodeURIComponent(r.domain)}">${r.domain}</a></td><td>${r.total}</td>${r.counts.map((n) => html`<td class="${n ? '' : 'zero'}">${n}</td>`)}</tr>`)}</table>
<h2>Messages on ${self}</h2>
<form method="get" action="/console/queues" class="filters">
<label>State <select name="state"><option value="">any</option>${['incoming', 'active', 'deferred', 'hold'].map((st) => html`<option ${f.state === st ? 'selected' : ''}>${st}</option>`)}</select></label>
<label>Sender <input name="from" value="${f.from ?? ''}" placeholder="address or domain"></label>
<label>Recipient <input name="to" value="${f.to ?? ''}" placeholder="address or domain"></label>
<button>Filter</button></form>
<p class="actions bulk">${(f.state || f.from || f.to) ? 'Every message that matches this filter' : 'Every message in the queue'}: ${Object.entries(BULK).map(([op, b]) => html`<a class="button ${b.danger ? 'danger' : ''}" href="/console/confirm?action=bulk-${op}&${filterQuery(f)}">${b.label} all…</a> `)}</p>
<p class="muted list-total" data-total="${list.total}">${list.total} message(s)${list.complete ? '' : ' so far (the queue is still being read)'} · page ${list.page} of ${list.pages}
${list.page > 1 ? html` · <a href="${link(list.page - 1)}">previous</a>` : ''}${list.page < list.pages ? html` · <a href="${link(list.page + 1)}" rel="next">next</a>` : ''}</p>
<table class="messages"><thead><tr><th>Queue id</th><th>State</th><th>Arrived</th><th>Sender</th><th>Recipients pending</th><th>Size</th><th>Last reply</th></tr></thead><tbody>
${list.rows.map((r) => html`<tr data-id="${r.queueId}"><td><a href="/console/queues/${encodeURIComponent(r.queueId)}">${r.queueId}</a></td><td>${r.state}${r.busy ? ' (busy)' : ''}</td><td>${when(r.arrivedAt)}</td>
<td>${r.sender === '' ? '<>' : r.sender}</td><td>${r.recipients.slice(0, 2).join(', ')}${r.recipients.length > 2 ? ` +${r.recipients.length - 2}` : ''}</td><td>${r.size}</td><td class="reply">${r.lastReply ?? ''}</td></tr>`)}
</tbody></table>`, { ...(f.done ? { flash: f.done } : {}), ...(f.failed ? { error: f.failed } : {}) }));
    });
    scope.get('/queues/:id', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      const id = (req.params as { id: string }).id;
      const f = q(req);
      const r = await call(self, 'GET', `/queue/${encodeURIComponent(id)}`);
      if (r.status !== 200) return send(reply, frame(s, `Message ${id}`, 'queues', html`<p>${r.body?.error ?? `HTTP ${r.status}`}</p><p><a href="/console/tracking?queueId=${encodeURIComponent(id)}">Track it</a> · <a href="/console/queues">Back to the queue</a></p>`, { ...(f.done ? { flash: f.done } : {}) }), r.status === 404 ? 404 : 200);
      const m = r.body;
      const statusOf = (i: number) => m.statuses.find((x: any) => x.index === i);
      const act = (a: string) => html`<a class="button ${ACTIONS[a].danger ? 'danger' : ''}" href="/console/confirm?action=${a}&node=${self}&id=${encodeURIComponent(id)}">${ACTIONS[a].label}…</a>`;
      return send(reply, frame(s, `Message ${id}`, 'queues', html`
<p class="actions">${m.state === 'hold' ? act('release') : html`${act('hold')} ${act('flush')}`} ${act('delete')} <a href="/console/tracking?queueId=${encodeURIComponent(id)}">Timeline</a></p>
<table class="kv"><tr><th>State</th><td data-state="${m.state}">${m.state}</td></tr><tr><th>Sender</th><td>${m.envelope.sender || '<>'}</td></tr>
<tr><th>Arrived</th><td>${when(m.envelope.arrivedAt)}</td></tr><tr><th>Message-ID</th><td>${m.envelope.messageId}</td></tr>
<tr><th>Client</th><td>${m.envelope.client?.address} (${m.envelope.client?.helo})</td></tr><tr><th>Size</th><td>${m.size} bytes</td></tr>
${m.deferral ? html`<tr><th>Attempts</th><td>${m.deferral.attempts}, next ${when(m.deferral.nextAttemptAt)}</td></tr><tr><th>Last reply</th><td>${m.deferral.lastReply}</td></tr>` : ''}</table>
<h2>Recipients</h2><table><tr><th>Recipient</th><th>Original</th><th>Status</th><th>Reply</th></tr>
${m.envelope.recipients.map((rc: any, i: number) => { const st = statusOf(i); return html`<tr><td>${rc.address}</td><td>${rc.original !== rc.address ? rc.original : ''}</td><td>${st ? st.type : 'pending'}</td><td class="reply">${st?.reply ?? (m.deferral?.lastReply ?? '')}</td></tr>`; })}</table>
<h2>Headers</h2><pre class="headers">${m.headers}</pre>`, { ...(f.done ? { flash: f.done } : {}), ...(f.failed ? { error: f.failed } : {}) }));
    });

    // ---- Operations ----
    scope.get('/operations', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      const f = q(req);
      const v = await clusterView();
      const nodes = v ? v.nodes : [{ id: self, status: node.health(), reachable: true }];
      const link = (a: string, n: string, id = '') => html`<a class="button ${ACTIONS[a].danger ? 'danger' : ''}" href="/console/confirm?action=${a}&node=${n}${id ? `&id=${encodeURIComponent(id)}` : ''}">${ACTIONS[a].label}…</a>`;
      return send(reply, frame(s, 'Operations', 'operations', html`
<table><tr><th>Node</th><th>State</th><th>Load balancer</th><th>Fencing</th></tr>
${nodes.map((n) => html`<tr><td>${n.id}</td><td><span class="st st-${n.status}">${n.status}</span></td>
<td>${n.reachable ? (n.status === 'draining' ? link('resume', n.id) : link('drain', n.id)) : 'unreachable'}</td>
<td>${!v ? 'not in a cluster' : !n.reachable ? 'unreachable' : n.status === 'fenced' ? link('unfence', n.id) : link('fence', n.id)}</td></tr>`)}</table>
${v ? html`<h2>Spools taken over</h2>${v.spools.filter((x) => x.kind === 'claim').length ? html`<table><tr><th>Spool</th><th>Held by</th><th>Epoch</th><th></th></tr>
${v.spools.filter((x) => x.kind === 'claim').map((x) => html`<tr><td>${x.spool}</td><td>${x.by}</td><td>${x.epoch}</td><td>${link('handback', x.by, x.spool)}</td></tr>`)}</table>` : html`<p>None: every spool is delivered by its own node.</p>`}` : ''}`,
      { ...(f.done ? { flash: f.done } : {}), ...(f.failed ? { error: f.failed } : {}) }));
    });

    // ---- Actions ----
    scope.get('/confirm', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      const f = q(req);
      const roleNote = s.role !== 'operator' ? html`<p class="error">Your role (${s.role}) cannot do this: the node will refuse it.</p>` : '';
      if (f.action?.startsWith('bulk-')) {
        const op = f.action.slice('bulk-'.length);
        const b = BULK[op];
        if (!b) return send(reply, frame(s, 'Unknown action', '', html`<p>No such action.</p>`), 400);
        const { sel, words } = bulkSelection(f);
        const back = `/console/queues?${filterQuery(f)}`;
        // the node counts (the same selection as the action itself), so the number asked is the number done
        const r = await call(self, 'POST', `/queue/${op}`, { ...sel, dryRun: true });
        if (r.status !== 200) return send(reply, frame(s, `${b.label}: cannot count the messages`, '', html`<p class="error">${r.body?.error ?? `HTTP ${r.status}`}</p><p><a href="${back}">Back</a></p>`), 502);
        const n: number = r.body.matched;
        return send(reply, frame(s, `${b.label} ${n} message(s) on node ${self}?`, '', html`
<p class="explain">${words[0].toUpperCase()}${words.slice(1)} on node ${self}: <strong data-count="${n}">${n} message(s)</strong> now. They ${b.does}.</p>
${n === 0 ? html`<p>Nothing to do.</p><p><a href="${back}">Back to the queue</a></p>` : html`${roleNote}
<form method="post" action="/console/do" class="confirm">
<input type="hidden" name="_csrf" value="${s.csrf}"><input type="hidden" name="action" value="${f.action}"><input type="hidden" name="count" value="${n}">
${FILTER_KEYS.map((k) => (f[k] ? html`<input type="hidden" name="${k}" value="${f[k]}">` : ''))}
<button class="${b.danger ? 'danger' : ''}" name="confirm" value="yes">${b.label} ${n} message(s)</button> <a href="${back}">Cancel</a></form>
<p class="muted">If the number that matches changes before you confirm, nothing is done and you are asked again.</p>`}`));
      }
      const a = ACTIONS[f.action ?? ''];
      const target = f.node ?? self;
      if (!a || (a.needsId && !f.id)) return send(reply, frame(s, 'Unknown action', '', html`<p>No such action.</p>`), 400);
      return send(reply, frame(s, `${a.label}${a.needsId ? ` ${f.id}` : ''} on node ${target}?`, '', html`
<p class="explain">${a.explain(target, f.id ?? '')}</p>
${roleNote}
<form method="post" action="/console/do" class="confirm">
<input type="hidden" name="_csrf" value="${s.csrf}"><input type="hidden" name="action" value="${f.action}">
<input type="hidden" name="node" value="${target}"><input type="hidden" name="id" value="${f.id ?? ''}">
<button class="${a.danger ? 'danger' : ''}" name="confirm" value="yes">${a.label}</button> <a href="${a.back(f.id ?? '')}">Cancel</a></form>`));
    });
    scope.post('/do', async (req, reply) => {
      const s = sessionOf(req);
      if (!s) return reply.code(401).type('text/plain').send('Not logged in.');
      const b = (req.body ?? {}) as Record<string, string>;
      if (!auth.checkCsrf(s, b._csrf)) return reply.code(403).type('text/plain').send('Missing or wrong CSRF token: reload the page and try again.');
      if (s.role !== 'operator') return reply.code(403).type('text/plain').send(`Refused: user ${s.user} has the ${s.role} role; actions need the operator role.`);
      const finish = (ok: boolean, msg: string, back: string, fields: Record<string, unknown>) => {
        node.logger.info({ event: 'console-action', user: s.user, action: b.action, ...fields, ok }, `console: ${s.user}: ${msg}`);
        return reply.code(303).header('location', `${back}${back.includes('?') ? '&' : '?'}${ok ? 'done' : 'failed'}=${encodeURIComponent(msg)}`).send();
      };
      if (b.action?.startsWith('bulk-')) {
        const op = b.action.slice('bulk-'.length);
        const spec = BULK[op];
        const count = Number(b.count);
        if (!spec || !/^\d+$/.test(b.count ?? '')) return reply.code(400).type('text/plain').send('Unknown action, or no confirmed count.');
        const { sel, words } = bulkSelection(b);
        const r = await call(self, 'POST', `/queue/${op}`, { ...sel, confirm: count });
        const ok = r.status >= 200 && r.status < 300;
        const msg = ok ? `${spec.label} on ${self}, ${words}: ${bulkSummary(op, r.body)}.`
          : r.status === 409 && typeof r.body?.matched === 'number' ? `${spec.label} not done: ${r.body.matched} message(s) match now, not ${count} as confirmed. Look again and confirm the new number.`
            : `${spec.label} on ${self} failed: ${r.body?.error ?? `HTTP ${r.status}`}`;
        return finish(ok, msg, `/console/queues?${filterQuery(b)}`, { node: self, selection: sel, confirmed: count, ...(ok ? { matched: r.body.matched } : {}) });
      }
      const a = ACTIONS[b.action ?? ''];
      const id = b.id ?? '';
      const target = b.node || self;
      if (!a || (a.needsId && !id) || (target !== self && !peers.some((p) => p.id === target))) return reply.code(400).type('text/plain').send('Unknown action, message or node.');
      const r = await call(target, a.method, a.path(id));
      const ok = r.status >= 200 && r.status < 300;
      const msg = ok ? `${a.label}${a.needsId ? ` ${id}` : ''} on ${target}: done${r.body?.result ? ` (${r.body.result})` : ''}.`
        : `${a.label}${a.needsId ? ` ${id}` : ''} on ${target} failed: ${r.body?.error ?? `HTTP ${r.status}`}`;
      return finish(ok, msg, a.back(id), { node: target, id });
    });

    // ---- Charts ----
    scope.get('/charts', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      return send(reply, frame(s, 'Charts', 'charts', html`<p class="muted">Node ${self}, per minute, the last hours (kept in memory since the node started).</p>
<h2>Traffic per minute</h2><div class="chart" id="chart-traffic" data-src="/console/charts/data"></div>
<h2>Queue depth</h2><div class="chart" id="chart-queue"></div>`, { scripts: ['uPlot.min.css', 'uPlot.iife.min.js', 'console.js'] }));
    });
    scope.get('/charts/data', async (req, reply) => {
      if (!sessionOf(req)) return reply.code(401).send({ error: 'no session' });
      await history.sample();
      return history.series();
    });

    // ---- Tracking ----
    scope.get('/tracking', async (req, reply) => {
      const s = need(req, reply);
      if (!s) return;
      const f = q(req);
      const keys = ['queueId', 'messageId', 'from', 'to', 'outcome', 'since', 'until'] as const;
      const asked = keys.some((k) => f[k]);
      let result: Html = html``;
      if (asked) {
        const qs = new URLSearchParams({ scope: 'cluster', limit: '50' });
        for (const k of keys) if (f[k]) qs.set(k, f[k]!);
        const r = await call(self, 'GET', `/track?${qs}`);
        if (r.status !== 200) result = html`<p class="error">${r.body?.error ?? `HTTP ${r.status}`}</p>`;
        else {
          const missing = Object.entries(r.body.nodes as Record<string, string>).filter(([, st]) => st !== 'ok');
          result = html`<p class="muted">${r.body.messages.length} message(s), searched on ${Object.keys(r.body.nodes).join(', ')}</p>
${missing.length ? html`<p class="error">Not answered: ${missing.map(([n, st]) => `${n} (${st})`).join('; ')}; their events are missing.</p>` : ''}
${(r.body.messages as MessageTimeline[]).map((m) => html`<section class="timeline" data-queue-id="${m.queueId}">
<h2><a href="/console/queues/${encodeURIComponent(m.queueId)}">${m.queueId}</a> <span class="st st-${m.status}">${m.status}</span></h2>
<p class="muted">${m.sender === '' ? '<>' : m.sender} → ${m.recipients.join(', ')} · ${m.messageId ?? ''} · nodes ${m.nodes.join(', ')}</p>
<ol>${collapse(m.events).map(({ e, times, until }) => html`<li data-event="${e.event}" data-node="${e.node}"><time>${when(e.t)}</time> <b>${e.event}</b>${times > 1 ? html` <span class="times">×${times}, until ${when(until)}</span>` : ''} on ${e.node}${e.secondary ? ` (secondary for ${e.secondary})` : ''}
${e.recipient ? html` · ${e.recipient}` : ''}${Array.isArray(e.recipients) ? html` · ${(e.recipients as string[]).join(', ')}` : ''}${e.nexthop ? html` via ${e.nexthop}` : ''}${e.spool && !e.queueId ? html` · spool ${e.spool}, epoch ${e.epoch}${e.reason ? `: ${e.reason}` : ''}` : ''}
${e.reply ? html`<div class="reply">${e.reply}</div>` : ''}</li>`)}</ol></section>`)}`;
        }
      }
      return send(reply, frame(s, 'Tracking', 'tracking', html`<form method="get" action="/console/tracking" class="filters">
<label>Recipient <input name="to" value="${f.to ?? ''}" placeholder="address or domain"></label>
<label>Sender <input name="from" value="${f.from ?? ''}" placeholder="address or domain"></label>
<label>Queue id <input name="queueId" value="${f.queueId ?? ''}"></label>
<label>Message-ID <input name="messageId" value="${f.messageId ?? ''}"></label>
<label>Outcome <select name="outcome"><option value="">any</option>${['delivered', 'deferred', 'bounced', 'expired', 'held', 'released', 'deleted', 'received'].map((o) => html`<option ${f.outcome === o ? 'selected' : ''}>${o}</option>`)}</select></label>
<label>Since <input name="since" value="${f.since ?? ''}" placeholder="1h, 2d or ISO time"></label>
<button>Search</button></form>${result}`));
    });
  }, { prefix: '/console' });
}
