/**
 * test/harness/cluster-certs.ts — a cluster CA and node certificates made with openssl
 * (src/cluster/replication/certs.ts), for the replication tests and benchmark.
 *
 * Exports: opensslMissing (a reason string, or false), makeClusterCerts(dir, nodeIds) → the CA
 * and one certificate per node (CN and subjectAltName DNS = node id, EC P-256, 1 day), plus
 * `foreign`: a certificate for the first node id signed by ANOTHER CA (a stranger's cluster).
 */
import { readFileSync } from 'node:fs';
import { opensslMissing, makeCa, makeNodeCert, type Pem } from '../../src/cluster/index.ts';

export { opensslMissing, type Pem };
export interface ClusterCerts { ca: string; nodes: Record<string, Pem>; foreign: Pem }

export function makeClusterCerts(dir: string, nodeIds: readonly string[]): ClusterCerts {
  const ca = makeCa(dir, 'cluster-ca');
  const nodes: Record<string, Pem> = {};
  for (const id of nodeIds) nodes[id] = makeNodeCert(dir, ca, id, `node-${id}`);
  const other = makeCa(dir, 'other-ca');
  return { ca: readFileSync(ca.cert, 'utf8'), nodes, foreign: makeNodeCert(dir, other, nodeIds[0], 'foreign') };
}
