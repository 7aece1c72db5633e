/**
 * admin/admin-server.ts — the node's admin HTTP API (fastify): health for the load balancer,
 * Prometheus metrics, queue operations, table reload.
 *
 * Exports: startAdminServer.
 * Routes:
 *   GET  /health            200 {status:"ready"} | 503 {status:"starting"|"draining"|"fenced"|"stopping"}
 *                           (the same value also as `state`)
 *   POST /drain | /resume   take the node out of / back into service (see TandemNode.drain);
 *                           200 {state}, 409 when the node is starting or stopping
 *                           with a directory also {directory:{servers:[...], cache:{...}}}
 *                           (the status code does not depend on it: mail flows on cached answers)
 *   GET  /metrics           Prometheus text format
 *   GET  /queue             every queued message (id, state, busy, next attempt)
 *   GET  /queue/:id         envelope, per-recipient status, deferral, state
 *   POST /queue/:id/hold | /queue/:id/release    DELETE /queue/:id    POST /queue/flush
 *   POST /reload            reload tables (as SIGHUP)
 *   GET  /cluster           this node's view of the cluster (cluster nodes only; else 404)
 *   POST /cluster/fence | /cluster/unfence     take this node out / back in (operator fencing)
 *   POST /cluster/handback/:spool              hand a spool this node holds back to its node
 * Access: with admin.token set, every route but /health and /metrics needs
 * "Authorization: Bearer <token>"; without it, only loopback clients are served.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { TandemNode } from '../node/node.ts';
import { listQueue, showQueued } from './queue-listing.ts';
import { isSafeQueueId } from '../spool/index.ts';
import { NoSuchMessageError } from '../util/errors.ts';

export async function startAdminServer(node: TandemNode, host: string, port: number, token?: string): Promise<{ server: FastifyInstance; address: { host: string; port: number } }> {
  const app = Fastify({ logger: false });
  const loopback = (ip: string) => ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');

  app.addHook('onRequest', async (req, reply) => {
    const route = req.url.split('?')[0];
    if (route === '/health' || route === '/metrics') return;
    if (token) {
      if (req.headers.authorization !== `Bearer ${token}`) return reply.code(401).send({ error: 'missing or wrong bearer token (admin.token)' });
    } else if (!loopback(req.ip)) {
      return reply.code(403).send({ error: 'admin API without admin.token serves loopback clients only' });
    }
  });

  app.get('/health', async (_req, reply) => {
    const status = node.health();
    const directory = node.directoryHealth();
    return reply.code(status === 'ready' ? 200 : 503).send({ status, state: status, node: node.config.node.id, ...(directory ? { directory } : {}) });
  });
  const serviceChange = (change: 'drain' | 'resume') => async (_req: unknown, reply: any) => {
    const state = change === 'drain' ? node.drain() : node.resume();
    const wanted = change === 'drain' ? 'draining' : 'ready';
    if (state !== wanted) return reply.code(409).send({ state, error: `the node is ${state}; it cannot ${change} now` });
    return { state, node: node.config.node.id };
  };
  app.post('/drain', serviceChange('drain'));
  app.post('/resume', serviceChange('resume'));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', node.metrics.registry.contentType);
    return node.metrics.registry.metrics();
  });
  app.get('/queue', async () => ({ node: node.config.node.id, counts: node.qmgr.counts(), ...(await listQueue(node.spool)) }));
  app.get<{ Params: { id: string } }>('/queue/:id', async (req, reply) => {
    if (!isSafeQueueId(req.params.id)) return reply.code(400).send({ error: `${JSON.stringify(req.params.id)} is not a queue id` });
    const details = await showQueued(node.spool, req.params.id);
    if (!details) return reply.code(404).send({ error: `no message ${req.params.id} in the queue` });
    return details;
  });
  app.post('/queue/flush', async () => ({ flushed: node.qmgr.flush() }));
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
  app.post('/reload', async (_req, reply) => {
    try {
      await node.reload();
      return { reloaded: true };
    } catch (err) {
      return reply.code(500).send({ error: `reload failed, old tables kept: ${(err as Error).message}` });
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
    return cluster.status();
  });
  app.post('/cluster/unfence', async (_req, reply) => {
    const cluster = clusterOf(reply);
    if (!cluster) return;
    cluster.unfenceByOperator();
    return cluster.status();
  });
  app.post<{ Params: { spool: string } }>('/cluster/handback/:spool', async (req, reply) => {
    const cluster = clusterOf(reply);
    if (!cluster) return;
    try {
      return { released: await cluster.handBack(req.params.spool) };
    } catch (err) {
      return reply.code(409).send({ error: (err as Error).message });
    }
  });

  await app.listen({ host, port });
  const a = app.server.address() as { address: string; port: number };
  return { server: app, address: { host: a.address, port: a.port } };
}
