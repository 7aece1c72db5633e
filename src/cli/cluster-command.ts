/**
 * cli/cluster-command.ts — `tandem cluster status|fence|unfence|drain|resume|handback|takeover`.
 *
 * The nodes are found in the cluster: section of --config (their admin addresses); status asks
 * every node for its view (GET /cluster) and merges them: a node that answers speaks for
 * itself, one that does not is shown as its peers see it (dead, suspect, ...). --json prints the
 * merged view and every raw view for scripts. fence/unfence go to the node named; handback goes
 * to the node that holds the spool's claim.
 * Exit codes: 0; 1 the node refused (e.g. it does not hold that spool); 2 usage; 69 no node (or
 * not the one needed) reachable; 78 configuration error.
 */
import { configPath, loadCliConfig, type CliConfigOptions } from './cli-config.ts';
import { type ClusterStatus, holdersOf } from '../cluster/index.ts';
import { ConfigError } from '../util/errors.ts';
import { EXIT } from './exit-codes.ts';
import { adminBase, adminCall } from './admin-client.ts';

interface ClusterOpts extends CliConfigOptions { token?: string; json?: boolean }

interface Target { id: string; site: string; base?: string }

async function targets(opts: ClusterOpts): Promise<{ nodes: Target[]; token?: string; holders: (spool: string) => string[] } | number> {
  const file = configPath(opts);
  if (!file) {
    console.error('tandem cluster: give the cluster config with --config FILE or TANDEM_CONFIG (its cluster.nodes list the admin addresses)');
    return EXIT.USAGE;
  }
  try {
    const c = await loadCliConfig(opts);
    if (!c.cluster) {
      console.error(`tandem cluster: ${file} has no cluster: section`);
      return EXIT.CONFIG;
    }
    const token = opts.token ?? process.env.TANDEM_ADMIN_TOKEN ?? c.admin.token;
    // under admin.tls the nodes speak HTTPS (a private CA: NODE_EXTRA_CA_CERTS)
    const scheme = c.admin.tls ? 'https' : 'http';
    const cl = c.cluster;
    return {
      nodes: cl.nodes.map((n) => ({ id: n.id, site: n.site, ...(n.admin ? { base: adminBase(n.admin).replace(/^http:/, `${scheme}:`) } : {}) })),
      ...(token ? { token } : {}),
      // who may take a spool over: its holders in takeover order (replicated), else every other node
      holders: (spool) => (cl.storage === 'replicated' ? holdersOf(cl.nodes, spool, cl.replication?.remote_copy) : cl.nodes.map((n) => n.id).filter((id) => id !== spool)),
    };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`tandem cluster: configuration error in ${err.message}`);
      return EXIT.CONFIG;
    }
    throw err;
  }
}

const age = (ms: number) => (ms < 60_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 60_000)}m`);

export async function runClusterStatus(opts: ClusterOpts): Promise<number> {
  const t = await targets(opts);
  if (typeof t === 'number') return t;
  const views = new Map<string, ClusterStatus>();
  const errors = new Map<string, string>();
  await Promise.all(t.nodes.map(async (n) => {
    if (!n.base) return void errors.set(n.id, 'no admin address in cluster.nodes');
    const r = await adminCall(n.base, 'GET', '/cluster', t.token, 2000);
    if (r.reachable && r.status === 200) views.set(n.id, r.body);
    else errors.set(n.id, r.reachable ? `HTTP ${r.status}: ${r.body?.error ?? ''}` : `unreachable (${r.error})`);
  }));
  if (views.size === 0) {
    console.error(`tandem cluster status: no node answered: ${[...errors].map(([id, e]) => `${id} ${e}`).join('; ')}`);
    return EXIT.UNAVAILABLE;
  }
  const { nodes, spools } = mergeClusterViews(t.nodes, views, errors);
  // every node's configuration faults, once per (seen-by, kind, subject)
  const faults = [...views].flatMap(([id, v]) => (v.faults ?? []).map((f) => ({ seenBy: id, ...f })));
  if (opts.json) {
    console.log(JSON.stringify({ nodes, spools, faults, views: Object.fromEntries(views) }, null, 2));
    return faults.length ? EXIT.FAILED : EXIT.OK;
  }
  const rows = [['NODE', 'SITE', 'STATUS', 'NET-AGE', 'DISK-AGE', 'QUEUE', 'SECONDARIES']];
  // grouped by site, sites in the order of cluster.nodes
  const siteOrder = [...new Set(nodes.map((n) => n.site))];
  const bySite = [...nodes].sort((x, y) => siteOrder.indexOf(x.site) - siteOrder.indexOf(y.site));
  for (const n of bySite) {
    rows.push([n.id, n.site, n.status, n.netAgeMs === undefined ? '-' : age(n.netAgeMs), n.diskAgeMs === undefined ? '-' : age(n.diskAgeMs),
      n.queue === undefined ? '-' : n.queueFrom === 'node' ? String(n.queue) : n.queueFrom === 'last heartbeat' ? `${n.queue} (as of ${age(n.queueAgeMs ?? 0)} ago)` : `${n.queue} (${n.queueFrom})`, n.secondaries.map((s) => `${s.spool} (epoch ${s.epoch}, ${Object.values(s.queue).reduce((a, b) => a + b, 0)} queued)`).join(', ') || '-']);
  }
  printTable(rows);
  const replicatedViews = [...views.values()].filter((v) => v.replication).sort((x, y) => siteOrder.indexOf(x.site) - siteOrder.indexOf(y.site));
  // storage: replicated — each queue's copies: the holders in takeover order, with the copies each keeps now
  const copiesOf = (spool: string) => t.holders(spool).map((h) => {
    const held = views.get(h)?.replication?.holding[spool];
    return `${h}${held === undefined ? (views.has(h) ? '' : ' (?)') : ` (${held})`}`;
  }).join(', ');
  const spoolRows = [['SPOOL', 'SITE', 'DELIVERED BY', 'EPOCH', 'SINCE', ...(replicatedViews.length ? ['COPIES AT'] : [])]];
  const siteOf = (id: string) => t.nodes.find((n) => n.id === id)?.site ?? '-';
  for (const s of [...spools].sort((x, y) => siteOrder.indexOf(siteOf(x.spool)) - siteOrder.indexOf(siteOf(y.spool)))) {
    spoolRows.push([s.spool, siteOf(s.spool), s.deliverer === s.spool ? `${s.spool} (own node)` : `${s.deliverer} (takeover)`, String(s.epoch), s.at || '-', ...(replicatedViews.length ? [copiesOf(s.spool)] : [])]);
  }
  console.log('');
  printTable(spoolRows);
  if (replicatedViews.length) {
    // storage: replicated — where each node's copies are, and how many messages have one copy only
    const repRows = [['NODE', 'COPIES AT', 'CONNECTION', 'UNPROTECTED', 'DISCARD LAG p50/p99', 'HOLDS COPIES OF']];
    for (const v of replicatedViews) {
      const r = v.replication!;
      const lag = r.discardLagMs.p50 === undefined ? '-' : `${r.discardLagMs.p50}/${r.discardLagMs.p99} ms`;
      const holders = r.holders ?? [{ id: r.holder, connection: r.connection, unprotected: r.unprotected }];
      repRows.push([v.node, holders.map((h) => h.id).join(', '), holders.map((h) => `${h.id} ${h.connection}`).join(', '), holders.map((h) => `${h.unprotected}`).join('/'), lag, Object.entries(r.holding).map(([o, n]) => `${o}: ${n}`).join(', ') || '-']);
    }
    console.log('');
    printTable(repRows);
  }
  if (faults.length) {
    console.log('');
    console.log('CONFIGURATION FAULTS (the cluster stays safe: nothing is taken over on this evidence; fix the configuration)');
    for (const f of faults) console.log(`  ${f.seenBy}: ${f.kind} (${f.subject}): ${f.message}`);
  }
  return faults.length ? EXIT.FAILED : EXIT.OK;
}

/**
 * One cluster view from every node's own (GET /cluster): a node that answered speaks for itself,
 * one that did not is shown as its freshest peer sees it; each spool's latest claim record says
 * who delivers it. (Also the console's cluster page.)
 */
export function mergeClusterViews(targets: Array<{ id: string; site: string }>, views: Map<string, ClusterStatus>, errors: Map<string, string>) {
  // a node that does not answer: its queue as the secondary delivering its spool reports it now;
  // else the depth it last announced, with how old that is (never shown as if current)
  const secondaryOf = (id: string) => {
    for (const v of views.values()) {
      const s = v.secondaries.find((x) => x.spool === id);
      if (s) return { by: v.node, queue: Object.values(s.queue).reduce((a, b) => a + b, 0) };
    }
    return undefined;
  };
  const nodes = targets.map((n) => {
    const own = views.get(n.id);
    const secondary = own ? undefined : secondaryOf(n.id);
    const seen = [...views.values()].map((v) => v.peers.find((p) => p.id === n.id)).filter((p) => p !== undefined);
    const freshest = seen.sort((x, y) => x.netAgeMs - y.netAgeMs)[0];
    const status = own ? (own.fenced ? 'fenced' : own.state === 'ready' ? 'alive' : own.state) : (freshest?.status.type ?? 'unknown');
    return {
      id: n.id, site: n.site, status, reachable: !!own,
      ...(own ? {} : { error: errors.get(n.id) }),
      netAgeMs: own ? 0 : freshest?.netAgeMs, diskAgeMs: own ? own.diskHeartbeatAgeMs : freshest?.diskAgeMs,
      queue: own ? own.queue : secondary ? secondary.queue : freshest?.announced?.queue,
      queueFrom: own ? 'node' : secondary ? `secondary on ${secondary.by}` : freshest?.announced ? 'last heartbeat' : undefined,
      ...(own || secondary || !freshest?.announced ? {} : { queueAgeMs: freshest.netAgeMs }),
      ownSpool: own?.ownSpool,
      secondaries: own?.secondaries ?? [],
    };
  });
  const claims = new Map<string, ClusterStatus['claims'][number]>();
  for (const v of views.values()) for (const c of v.claims) if ((claims.get(c.spool)?.epoch ?? -1) < c.epoch) claims.set(c.spool, c);
  const spools = targets.map((n) => {
    const record = claims.get(n.id) ?? { spool: n.id, epoch: 0, kind: 'release' as const, by: n.id, deliverer: n.id, at: '' };
    // replicated storage keeps claims per holder: the node that runs a secondary over the spool says who delivers it
    const runner = [...views.values()].find((v) => v.secondaries.some((x) => x.spool === n.id));
    return runner && record.deliverer !== runner.node ? { ...record, deliverer: runner.node, kind: 'claim' as const, by: runner.node, epoch: runner.secondaries.find((x) => x.spool === n.id)!.epoch } : record;
  });
  return { nodes, spools };
}

function printTable(rows: string[][]): void {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  for (const r of rows) console.log(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '));
}

export type ClusterAction = 'fence' | 'unfence' | 'handback' | 'takeover' | 'drain' | 'resume';

/**
 * fence / unfence / drain / resume NODE, handback / takeover SPOOL; with `site` instead of a
 * name, the action on every node (or spool) of that site, one after the other, each reported.
 */
export async function runClusterAction(action: ClusterAction, name: string | undefined, opts: ClusterOpts & { site?: string }): Promise<number> {
  const t = await targets(opts);
  if (typeof t === 'number') return t;
  if ((name === undefined) === (opts.site === undefined)) {
    console.error(`tandem cluster ${action}: name one ${action === 'handback' || action === 'takeover' ? 'spool' : 'node'}, or give --site SITE (not both)`);
    return EXIT.USAGE;
  }
  if (name !== undefined) return actOn(action, name, t, opts);
  const members = t.nodes.filter((n) => n.site === opts.site);
  if (!members.length) {
    console.error(`tandem cluster ${action}: no node of cluster.nodes is in site ${opts.site} (sites: ${[...new Set(t.nodes.map((n) => n.site))].join(', ')})`);
    return EXIT.USAGE;
  }
  let worst: number = EXIT.OK;
  for (const n of members) {
    const code = await actOn(action, n.id, t, opts);
    if (code !== EXIT.OK && worst === EXIT.OK) worst = code;
  }
  return worst;
}

type Targets = Exclude<Awaited<ReturnType<typeof targets>>, number>;

async function actOn(action: ClusterAction, name: string, t: Targets, opts: ClusterOpts): Promise<number> {
  let target: Target | undefined;
  if (!t.nodes.some((n) => n.id === name)) {
    console.error(`tandem cluster ${action}: no node ${name} in cluster.nodes`);
    return EXIT.USAGE;
  }
  if (action === 'takeover') return takeOver(name, t, opts);
  if (action === 'handback') {
    for (const n of t.nodes) {
      if (!n.base) continue;
      const r = await adminCall(n.base, 'GET', '/cluster', t.token, 2000);
      if (r.reachable && r.status === 200 && (r.body as ClusterStatus).claims.some((c) => c.spool === name && c.kind === 'claim' && c.by === n.id)) target = n;
    }
    if (!target) {
      console.error(`tandem cluster handback: no reachable node holds a claim on spool ${name}`);
      return EXIT.FAILED;
    }
  } else {
    target = t.nodes.find((n) => n.id === name)!;
  }
  if (!target.base) {
    console.error(`tandem cluster ${action}: node ${target.id} has no admin address in cluster.nodes`);
    return EXIT.CONFIG;
  }
  const path = action === 'handback' ? `/cluster/handback/${encodeURIComponent(name)}` : action === 'drain' || action === 'resume' ? `/${action}` : `/cluster/${action}`;
  const r = await adminCall(target.base, 'POST', path, t.token, 90_000);
  if (!r.reachable) {
    console.error(`tandem cluster ${action}: node ${target.id} is not reachable at ${target.base} (${r.error})${action === 'fence' || action === 'drain' ? '; a node that is down is already out: its peers take its spool over after cluster.dead_after' : ''}`);
    return EXIT.UNAVAILABLE;
  }
  if (r.status >= 400) {
    console.error(`tandem cluster ${action}: ${r.body?.error ?? `HTTP ${r.status}`}`);
    return EXIT.FAILED;
  }
  if (opts.json) console.log(JSON.stringify(r.body, null, 2));
  else if (action === 'handback') console.log(`spool ${name} handed back by ${target.id} (epoch ${r.body.released.epoch})`);
  else if (action === 'drain') console.log(`node ${target.id}: draining (out of the balancer, new sessions 421; its queue is still delivered)`);
  else if (action === 'resume') console.log(`node ${target.id}: taking mail again`);
  else console.log(`node ${target.id}: ${action === 'fence' ? 'fenced (no mail in, no delivery; its peers take its spool over)' : 'unfence requested (it resumes once its disk heartbeat is renewed; a spool taken over meanwhile comes back by handback)'}`);
  return EXIT.OK;
}

/** Ask the spool's holders, in takeover order, to take it over; the first that does wins. */
async function takeOver(spool: string, t: Targets, opts: ClusterOpts): Promise<number> {
  const refusals: string[] = [];
  for (const id of t.holders(spool)) {
    const n = t.nodes.find((x) => x.id === id)!;
    if (!n.base) {
      refusals.push(`${id}: no admin address in cluster.nodes`);
      continue;
    }
    const r = await adminCall(n.base, 'POST', `/cluster/takeover/${encodeURIComponent(spool)}`, t.token, 90_000);
    if (!r.reachable) refusals.push(`${id}: not reachable (${r.error})`);
    else if (r.status >= 400) refusals.push(`${id}: ${r.body?.error ?? `HTTP ${r.status}`}`);
    else {
      if (opts.json) console.log(JSON.stringify(r.body, null, 2));
      else console.log(`spool ${spool} taken over by ${id} (epoch ${r.body.claimed.epoch}): its secondary delivers ${spool}'s queue`);
      return EXIT.OK;
    }
  }
  console.error(`tandem cluster takeover: nobody took spool ${spool} over:\n${refusals.map((x) => `  ${x}`).join('\n')}`);
  return refusals.every((x) => / not reachable /.test(x)) ? EXIT.UNAVAILABLE : EXIT.FAILED;
}
