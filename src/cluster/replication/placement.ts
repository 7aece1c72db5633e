/**
 * replication/placement.ts — where copies are kept under cluster.storage: replicated.
 *
 * One holder per node: its partner, else the next node in cluster.nodes (wrapping round). All
 * of one origin's copies are in one place, so only that node can take its queue over and no
 * two survivors ever deliver one copy. The holder keeps them under its shadow folder
 * (cluster.replication.shadow_dir, default <spool.root>/.shadow), one folder per origin.
 */
import { join } from 'node:path';
import type { TandemConfig } from '../../config/schema.ts';

type ClusterNodes = NonNullable<TandemConfig['cluster']>['nodes'];

/** The node that keeps `node`'s copies. */
export function holderOf(nodes: ClusterNodes, node: string): string {
  const self = nodes.find((n) => n.id === node);
  if (self?.partner) return self.partner;
  const i = nodes.findIndex((n) => n.id === node);
  return nodes[(i + 1) % nodes.length].id;
}

/** The nodes whose copies `node` keeps. */
export function originsOf(nodes: ClusterNodes, node: string): string[] {
  return nodes.filter((n) => n.id !== node && holderOf(nodes, n.id) === node).map((n) => n.id);
}

/** This node's shadow folder (the copies it keeps for others, and its claims on them). */
export function shadowRoot(config: TandemConfig): string {
  return config.cluster?.replication?.shadow_dir ?? join(config.spool.root, '.shadow');
}
