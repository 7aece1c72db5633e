/**
 * admin/admin-server.ts — the node's admin HTTP API (fastify): health for the load balancer,
 * Prometheus metrics, queue operations, table reload.
 *
 * Routes:
 *   GET  /health            200 {status:"ready"} | 503 {status:"starting"|"draining"|"fenced"|"returning"|"stopping"};
 *                           with `faults` (cluster configuration faults) when there are any — they
 *                           do not take the node out of the balancer: it still works, safely
 *                           (the same value also as `state`)
 *   POST /drain | /resume   take the node out of / back into service (see TandemNode.drain);
 *                           200 {state}, 409 when the node is starting or stopping
 *                           with a directory also {directory:{servers:[...], cache:{...}}}
 *                           (the status code does not depend on it: mail flows on cached answers)
 *   GET  /metrics           Prometheus text format
 *   GET  /queue             every queued message (id, state, busy, next attempt)
 *   GET  /queue/shape       pending recipients by destination domain × age (as qshape); ?state=
 *   GET  /queue/:id         envelope, per-recipient status, deferral, state; ?body=1 the message too
 *   POST /queue/:id/hold | /queue/:id/release | /queue/:id/flush    DELETE /queue/:id      one message
 *                           (flush: tried now, past its backoff and the dead-destination memory;
 *                           404 when not queued, 409 when on hold)
 *   POST /queue/hold | release | delete | flush | requeue   with a JSON selection
 *                           {ids?, all?, sender?, senderDomain?, recipient?, domain?, state?, olderThan?}
 *                           → {matched, results: [{queueId, result}], missing} (flush:
 *                           {matched, flushed}); flush without a body flushes everything; requeue
 *                           re-expands aliases (qmgr/requeue.ts), result "requeued as ID …". A bulk
 *                           delete (all, a filter, several ids) answers 409 {matched} unless the
 *                           body carries "confirm": <that number>; any operation given "confirm"
 *                           answers 409 {matched} when that is not the number that matches now
 *                           (the console's confirmation states a count). "dryRun": true → only
 *                           {matched, missing, dryRun}: nothing is done.
 *   POST /reload            re-read the config file (as SIGHUP): {applied, restartNeeded}
 *   GET  /cluster           this node's view of the cluster (cluster nodes only; else 404)
 *   POST /cluster/fence | /cluster/unfence     take this node out / back in (operator fencing)
 *   POST /cluster/handback/:spool              hand a spool this node holds back to its node
 *   POST /cluster/takeover/:spool              replicated: deliver a dead node's copies kept here now (operator)
 *   GET  /track?…           tracking search (track/track-routes.ts); scope=cluster: every node, merged
 *   /console/…              the web console (console/console.ts: its own login, sessions and CSRF)
 * Access: with admin.token set, every route but /health and /metrics needs
 * "Authorization: Bearer <token>"; without it, only loopback clients are served.
 * With admin.tls the server speaks HTTPS only.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { AdminNode } from './admin-node.ts';
import {
  NOT_REQUEUED, listQueue, showQueued, queueShape, selectQueued, countQueued, selectionFromJson,
  isEmptySelection, deleteNeedsConfirmation, type QueueSelection,
} from '../qmgr/index.ts';
import { QUEUE_STATES, type QueueState } from '../spool/types.ts';
import { isSafeQueueId, CorruptQueueFileError } from '../spool/index.ts';
import { readFileSync } from 'node:fs';
import { registerTrackRoutes } from '../track/track-routes.ts';
import { registerConsole } from '../console/console.ts';
import { NoSuchMessageError, TempLookupError } from '../util/errors.ts';

export async function startAdminServer(node: AdminNode, host: string, port: number, token?: string, tls?: { cert: string; key: string }): Promise<{ server: FastifyInstance; address: { host: string; port: number } }> {
  const app = (tls ? Fastify({ logger: false, https: { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } }) : Fastify({ logger: false })) as unknown as FastifyInstance;
  const loopback = (ip: string) => ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');

  app.addHook('onRequest', async (req, reply) => {
    const route = req.url.split('?')[0];
    if (route === '/health' || route === '/metrics' || route === '/console' || route.startsWith('/console/')) return;
    if (token) {
      if (req.headers.authorization !== `Bearer ${token}`) return reply.code(401).send({ error: 'missing or wrong bearer token (admin.token)' });
    } else if (!loopback(req.ip)) {
      return reply.code(403).send({ error: 'admin API without admin.token serves loopback clients only' });
    }
  });

  app.get('/health', async (_req, reply) => {
    const status = node.health();
    const directory = node.directoryHealth();
    const faults = node.cluster?.currentFaults() ?? [];
    const replication = node.replicationHealth();
    return reply.code(status === 'ready' ? 200 : 503).send({ status, state: status, node: node.config.node.id, ...(directory ? { directory } : {}), ...(faults.length ? { faults } : {}), ...(replication ? { replication } : {}) });
  });
  const serviceChange = (change: 'drain' | 'resume') => async (_req: unknown, reply: any) => {
    const state = change === 'drain' ? node.drain() : node.resume();
    await node.acceptStateSettled();
    const wanted = change === 'drain' ? 'draining' : 'ready';
    if (state !== wanted) return reply.code(409).send({ state, error: `the node is ${state}; it cannot ${change} now` });
    return { state, node: node.config.node.id };
  };
  app.post('/drain', serviceChange('drain'));
  app.post('/resume', serviceChange('resume'));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', node.metrics.registry.contentType);
    return node.metrics.text();
  });
  app.get('/queue', async () => ({ node: node.config.node.id, counts: node.qmgr.counts(), ...(await listQueue(node.spool)) }));
  app.get<{ Querystring: { state?: string } }>('/queue/shape', async (req, reply) => {
    const state = req.query.state;
    if (state !== undefined && !(QUEUE_STATES as readonly string[]).includes(state)) return reply.code(400).send({ error: `state ${JSON.stringify(state)}: use incoming, active, deferred or hold` });
    return { node: node.config.node.id, ...(await queueShape(node.spool, { index: node.qmgr.index, ...(state ? { state: state as QueueState } : {}) })) };
  });
  app.get<{ Params: { id: string }; Querystring: { body?: string } }>('/queue/:id', async (req, reply) => {
    if (!isSafeQueueId(req.params.id)) return reply.code(400).send({ error: `${JSON.stringify(req.params.id)} is not a queue id` });
    const details = await showQueued(node.spool, req.params.id, { body: req.query.body === '1' || req.query.body === 'true' });
    if (!details) return reply.code(404).send({ error: `no message ${req.params.id} in the queue` });
    return details;
  });
  const bulk = (op: 'hold' | 'release' | 'delete' | 'flush' | 'requeue') => async (req: { body?: unknown }, reply: any) => {
    let sel: QueueSelection;
    try {
      sel = selectionFromJson(req.body);
    } catch (err) {
      return reply.code(400).send({ error: (err as Error).message });
    }
    const { confirm, dryRun } = (req.body ?? {}) as { confirm?: unknown; dryRun?: unknown };
    if (dryRun !== undefined && typeof dryRun !== 'boolean') return reply.code(400).send({ error: 'dryRun: true or false' });
    if (confirm !== undefined && !(Number.isInteger(confirm) && (confirm as number) >= 0)) return reply.code(400).send({ error: 'confirm: the number of messages that match' });
    if (op === 'flush' && isEmptySelection(sel) && confirm === undefined && dryRun === undefined) {
      const flushed = node.qmgr.flush();
      return { matched: flushed, flushed };
    }
    if (isEmptySelection(sel)) return reply.code(400).send({ error: 'say which messages: ids, all, or a filter (sender, recipient, domain, state, olderThan)' });
    // the running queue manager's envelope index answers without reading the queue files
    if (dryRun === true) return { ...(await countQueued(node.spool, sel, Date.now(), node.qmgr.index)), dryRun: true };
    const { selected, missing } = await selectQueued(node.spool, sel, Date.now(), node.qmgr.index);
    if (confirm !== undefined && confirm !== selected.length) {
      return reply.code(409).send({ matched: selected.length, missing, error: `${selected.length} message(s) match now, not ${JSON.stringify(confirm)} as confirmed; nothing done` });
    }
    if (op === 'flush') return { matched: selected.length, flushed: node.qmgr.flush(selected.map((m) => m.queueId)), missing };
    if (op === 'delete' && deleteNeedsConfirmation(sel, selected.length) && confirm !== selected.length) {
      return reply.code(409).send({ matched: selected.length, missing, error: `${selected.length} message(s) match; send "confirm": ${selected.length} to delete them` });
    }
    const results: Array<{ queueId: string; result: string }> = [];
    for (const { queueId } of selected) {
      try {
        results.push({
          queueId,
          result: op === 'hold' ? await node.qmgr.hold(queueId) : op === 'release' ? await node.qmgr.release(queueId)
            : op === 'requeue' ? await node.qmgr.requeue(queueId) : await node.qmgr.remove(queueId),
        });
      } catch (err) {
        if (err instanceof TempLookupError || err instanceof CorruptQueueFileError) { results.push({ queueId, result: `${NOT_REQUEUED}: ${err.message}` }); continue; }
        if (!(err instanceof NoSuchMessageError)) throw err;
        results.push({ queueId, result: 'gone' }); // delivered while we looked
      }
    }
    return { matched: selected.length, results, missing };
  };
  for (const op of ['hold', 'release', 'delete', 'flush', 'requeue'] as const) app.post(`/queue/${op}`, bulk(op));
  const action = (name: 'hold' | 'release' | 'delete') => async (req: { params: { id: string } }, reply: any) => {
    if (!isSafeQueueId(req.params.id)) return reply.code(400).send({ error: `${JSON.stringify(req.params.id)} is not a queue id` });
    try {
      const id = req.params.id;
      const result = name === 'hold' ? await node.qmgr.hold(id) : name === 'release' ? await node.qmgr.release(id) : await node.qmgr.remove(id);
      return { queueId: id, result };
    } catch (err) {
      if (err instanceof NoSuchMessageError) return reply.code(404).send({ error: err.message });
      throw err;
    }
  };
  app.post<{ Params: { id: string } }>('/queue/:id/hold', action('hold'));
  app.post<{ Params: { id: string } }>('/queue/:id/release', action('release'));
  app.delete<{ Params: { id: string } }>('/queue/:id', action('delete'));
  app.post<{ Params: { id: string } }>('/queue/:id/flush', async (req, reply) => {
    const id = req.params.id;
    if (!isSafeQueueId(id)) return reply.code(400).send({ error: `${JSON.stringify(id)} is not a queue id` });
    const state = await node.spool.find(id);
    if (!state || state === 'corrupt') return reply.code(404).send({ error: `no message ${id} in the queue` });
    if (state === 'hold') return reply.code(409).send({ error: `message ${id} is on hold: release it to have it delivered` });
    return { queueId: id, result: node.qmgr.flush([id]) ? 'flushed' : 'not-queued' };
  });
  app.post('/reload', async (_req, reply) => {
    try {
      return { reloaded: true, ...(await node.reload()) };
    } catch (err) {
      return reply.code(500).send({ error: `reload failed, old configuration kept: ${(err as Error).message}` });
    }
  });

  const clusterOf = (reply: any) => {
    if (!node.cluster) reply.code(404).send({ error: `node ${node.config.node.id} is not in a cluster (no cluster: section in its config)` });
    return node.cluster;
  };
  app.get('/cluster', async (_req, reply) => clusterOf(reply)?.status());
  app.post('/cluster/fence', async (_req, reply) => {
    const cluster = clusterOf(reply);
    if (!cluster) return;
    cluster.fenceByOperator();
    await node.acceptStateSettled();
    return cluster.status();
  });
  app.post('/cluster/unfence', async (_req, reply) => {
    const cluster = clusterOf(reply);
    if (!cluster) return;
    cluster.unfenceByOperator();
    await node.acceptStateSettled();
    return cluster.status();
  });
  // operator actions on one spool: 409 with the reason when the node refuses
  const spoolAction = (route: string, act: (cluster: NonNullable<typeof node.cluster>, spool: string) => Promise<object>) => {
    app.post<{ Params: { spool: string } }>(route, async (req, reply) => {
      const cluster = clusterOf(reply);
      if (!cluster) return;
      try {
        return await act(cluster, req.params.spool);
      } catch (err) {
        return reply.code(409).send({ error: (err as Error).message });
      }
    });
  };
  spoolAction('/cluster/handback/:spool', async (cluster, spool) => ({ released: await cluster.handBack(spool) }));
  spoolAction('/cluster/takeover/:spool', async (cluster, spool) => ({ claimed: await cluster.takeOverByOperator(spool) }));

  registerTrackRoutes(app, node);
  await registerConsole(app, node);

  await app.listen({ host, port });
  const a = app.server.address() as { address: string; port: number };
  return { server: app, address: { host: a.address, port: a.port } };
}
