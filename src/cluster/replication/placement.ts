/**
 * replication/placement.ts — where copies are kept under cluster.storage: replicated, and which
 * of the nodes keeping them takes a dead node's queue over (docs/replication.md "Placement",
 * docs/sites.md).
 *
 * Holders of node X's copies, in takeover order:
 *   1. the local holder: X's partner, else the next node of X's site in cluster.nodes order
 *      (wrapping round), else — X alone in its site — the next node of any site;
 *   2. with cluster.replication.remote_copy: the remote holder, a node of the next site (sites in
 *      order of first appearance in cluster.nodes), the one at X's position within its own site
 *      (so a,b in dc1 and c,d in dc2 give a→c, b→d, c→a, d→b), unless that is already holder 1.
 * Every holder keeps X's copies under its shadow folder (cluster.replication.shadow_dir, default
 * <spool.root>/.shadow), one folder per origin. Only one holder delivers them at a time: the
 * first live one in this order; a later holder only when every earlier one is dead (and, across
 * sites, only with the witness's lock — cluster-manager.ts).
 */
import { join } from 'node:path';
import type { TandemConfig } from '../../config/schema.ts';

type ClusterNodes = NonNullable<TandemConfig['cluster']>['nodes'];

/** Sites in order of first appearance in cluster.nodes, each with its nodes in order. */
export function sitesOf(nodes: ClusterNodes): Map<string, string[]> {
  const sites = new Map<string, string[]>();
  for (const n of nodes) sites.set(n.site, [...(sites.get(n.site) ?? []), n.id]);
  return sites;
}

/** The nodes that keep `node`'s copies, in takeover order (see the header). */
export function holdersOf(nodes: ClusterNodes, node: string, remoteCopy = false): string[] {
  const at = nodes.findIndex((n) => n.id === node);
  if (at < 0) return [];
  const self = nodes[at];
  const rotated = [...nodes.slice(at + 1), ...nodes.slice(0, at)];
  const local = self.partner ?? (rotated.find((n) => n.site === self.site) ?? rotated[0])?.id;
  const holders = local ? [local] : [];
  if (remoteCopy) {
    const sites = [...sitesOf(nodes)];
    const si = sites.findIndex(([site]) => site === self.site);
    if (sites.length > 1) {
      const own = sites[si][1];
      const other = sites[(si + 1) % sites.length][1];
      const remote = other[own.indexOf(node) % other.length];
      if (!holders.includes(remote)) holders.push(remote);
    }
  }
  return holders;
}

/** The nodes whose copies `node` keeps. */
export function originsOf(nodes: ClusterNodes, node: string, remoteCopy = false): string[] {
  return nodes.filter((n) => n.id !== node && holdersOf(nodes, n.id, remoteCopy).includes(node)).map((n) => n.id);
}

/**
 * `holder`'s place in the takeover order of `origin`'s queue (0 first), and the holders before
 * it: it takes the queue over only when all of those are dead.
 */
export function takeoverRank(nodes: ClusterNodes, origin: string, holder: string, remoteCopy = false): { rank: number; before: string[] } {
  const holders = holdersOf(nodes, origin, remoteCopy);
  const rank = holders.indexOf(holder);
  return { rank, before: rank < 0 ? holders : holders.slice(0, rank) };
}

/** This node's shadow folder (the copies it keeps for others, and its claims on them). */
export function shadowRoot(config: TandemConfig): string {
  return config.cluster?.replication?.shadow_dir ?? join(config.spool.root, '.shadow');
}
