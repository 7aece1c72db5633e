/**
 * track/track-routes.ts — the admin API's tracking search route.
 *
 * GET /track?queueId=&messageId=&from=&to=&outcome=&since=&until=&limit=
 *   this node's answer: {node, messages: [{queueId, events}], clusterEvents}
 * GET /track?…&scope=cluster
 *   every node of cluster.nodes asked (the others through their own GET /track, with our admin
 *   token and, under admin.tls, our CA file), merged into one timeline per message:
 *   {messages: [{queueId, messageId, sender, recipients, status, first, last, nodes, events}], nodes: {id: "ok" | why not}}
 * 400 for a bad query (the message says what), 404 when the node keeps no index (tracking.path "",
 * tracking.search false, or an index that could not be opened).
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { AdminNode } from '../admin/admin-node.ts';
import type { TandemConfig } from '../config/schema.ts';
import { parseTrackQuery, searchCluster } from './search.ts';
import { adminBase } from '../cli/admin-client.ts';

/** The other nodes of the cluster and how to call their admin API (empty outside a cluster). */
export function clusterPeers(c: Pick<TandemConfig, 'admin' | 'cluster' | 'node'>): { peers: Array<{ id: string; base?: string }>; auth: { token?: string; ca?: Buffer } } {
  const scheme = c.admin.tls ? 'https' : 'http';
  const peers = (c.cluster?.nodes ?? []).filter((n) => n.id !== c.node.id)
    .map((n) => ({ id: n.id, ...(n.admin ? { base: adminBase(n.admin).replace(/^http:/, `${scheme}:`) } : {}) }));
  const ca = c.admin.tls?.ca ? readFileSync(c.admin.tls.ca) : undefined;
  return { peers, auth: { ...(c.admin.token ? { token: c.admin.token } : {}), ...(ca ? { ca } : {}) } };
}

export function registerTrackRoutes(app: FastifyInstance, node: AdminNode): void {
  app.get<{ Querystring: Record<string, string> }>('/track', async (req, reply) => {
    const tracker = node.tracker;
    if (!tracker) return reply.code(404).send({ error: 'tracking search is off on this node (tracking.path "" or tracking.search false, or its index could not be opened: see the log)' });
    let q;
    try { q = parseTrackQuery(req.query); } catch (err) { return reply.code(400).send({ error: (err as Error).message }); }
    if (req.query.scope !== 'cluster') return tracker.search(q);
    const { peers, auth } = clusterPeers(node.config);
    return searchCluster(q, { node: node.config.node.id, answer: () => tracker.search(q) }, peers, auth);
  });
}
