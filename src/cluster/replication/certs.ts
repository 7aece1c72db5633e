/**
 * replication/certs.ts — a cluster CA and node certificates made with the openssl command, for
 * `tandem up --sites` and the tests (docs/replication.md "Making the certificates" shows the
 * same commands for production, where the CA key stays off the nodes).
 *
 * Node certificates: CN and subjectAltName DNS = the node id, EC P-256, serverAuth + clientAuth;
 * files <dir>/<tag>.pem and .key.
 *
 * What can go wrong: openssl missing or failing (the error carries its output).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const version = spawnSync('openssl', ['version'], { encoding: 'utf8' });
export const opensslMissing: string | false = version.error || version.status !== 0 ? `openssl is needed to make the cluster certificates: ${version.error?.message ?? version.stderr}` : false;

export interface Pem { cert: string; key: string }

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.error?.message ?? r.stderr}`);
}

/** A self-signed CA: file names of its certificate and key. */
export function makeCa(dir: string, name: string, days = 1): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', String(days), '-subj', `/CN=${name}`, '-keyout', key, '-out', cert]);
  return { cert, key };
}

/** A node's certificate signed by `ca` (files <dir>/<tag>.pem, .key); returns the PEM texts. */
export function makeNodeCert(dir: string, ca: { cert: string; key: string }, nodeId: string, tag: string, days = 1): Pem {
  const key = path.join(dir, `${tag}.key`);
  const csr = path.join(dir, `${tag}.csr`);
  const cert = path.join(dir, `${tag}.pem`);
  const ext = path.join(dir, `${tag}.ext`);
  writeFileSync(ext, `subjectAltName=DNS:${nodeId}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${nodeId}`, '-keyout', key, '-out', csr]);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', String(days), '-extfile', ext, '-out', cert]);
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}
