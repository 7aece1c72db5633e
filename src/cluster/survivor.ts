/**
 * cluster/survivor.ts — which live node takes a dead node's spool over.
 *
 * Order (docs/ha.md "Takeover"): the spool's configured partner if it is live; then the other
 * live nodes of the same site, then those of other sites, each in cluster.nodes order starting
 * after the spool's node (so that two dead nodes' spools do not all land on the first node).
 * Every node computes the same answer from the same view; when views differ, the claim file's
 * exclusive create decides (claims.ts).
 */
import type { ClusterNodeConfig } from '../config/schema.ts';

export function chooseSurvivor(nodes: ClusterNodeConfig[], spool: string, isLive: (id: string) => boolean): string | undefined {
  const at = nodes.findIndex((n) => n.id === spool);
  if (at < 0) return undefined;
  const owner = nodes[at];
  if (owner.partner && owner.partner !== spool && isLive(owner.partner)) return owner.partner;
  const rotated = [...nodes.slice(at + 1), ...nodes.slice(0, at)].filter((n) => isLive(n.id));
  return (rotated.find((n) => n.site === owner.site) ?? rotated[0])?.id;
}
