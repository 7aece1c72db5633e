/**
 * test/harness/cluster-certs.ts — a cluster CA and node certificates made with openssl, for
 * the replication tests and benchmark (docs/replication.md shows the same commands).
 *
 * Exports: opensslMissing (a reason string, or false), makeClusterCerts(dir, nodeIds) → the CA
 * and one certificate per node (CN and subjectAltName DNS = node id, EC P-256, 1 day), plus
 * `foreign`: a certificate for the first node id signed by ANOTHER CA (a stranger's cluster).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const version = spawnSync('openssl', ['version'], { encoding: 'utf8' });
export const opensslMissing: string | false = version.error || version.status !== 0 ? `openssl is needed to make test certificates: ${version.error?.message ?? version.stderr}` : false;

export interface Pem { cert: string; key: string }
export interface ClusterCerts { ca: string; nodes: Record<string, Pem>; foreign: Pem }

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${name}`, '-keyout', key, '-out', cert]);
  return { cert, key };
}

function makeNode(dir: string, ca: { cert: string; key: string }, nodeId: string, tag: string): Pem {
  const key = path.join(dir, `${tag}.key`);
  const csr = path.join(dir, `${tag}.csr`);
  const cert = path.join(dir, `${tag}.pem`);
  const ext = path.join(dir, `${tag}.ext`);
  writeFileSync(ext, `subjectAltName=DNS:${nodeId}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${nodeId}`, '-keyout', key, '-out', csr]);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '1', '-extfile', ext, '-out', cert]);
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}

export function makeClusterCerts(dir: string, nodeIds: readonly string[]): ClusterCerts {
  const ca = makeCa(dir, 'cluster-ca');
  const nodes: Record<string, Pem> = {};
  for (const id of nodeIds) nodes[id] = makeNode(dir, ca, id, `node-${id}`);
  const other = makeCa(dir, 'other-ca');
  return { ca: readFileSync(ca.cert, 'utf8'), nodes, foreign: makeNode(dir, other, nodeIds[0], 'foreign') };
}
