/**
 * cluster/paths.ts — where the cluster keeps its state on the shared storage, beside the spools:
 *   <spool.root>/.cluster/heartbeat/<node>      disk heartbeat slots (one per node)
 *   <spool.root>/.cluster/claims/<spool>/<epoch> spool claims and releases, one file per epoch
 *   <spool.root>/.cluster/tmp/                  files being written (then linked or renamed)
 */
import path from 'node:path';

export function clusterPaths(spoolRoot: string) {
  const base = path.join(spoolRoot, '.cluster');
  return {
    base,
    heartbeats: path.join(base, 'heartbeat'),
    heartbeat: (node: string) => path.join(base, 'heartbeat', node),
    claims: (spool: string) => path.join(base, 'claims', spool),
    tmp: path.join(base, 'tmp'),
  };
}
