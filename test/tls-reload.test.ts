/**
 * A certificate renewal needs no restart: the node's certificate and key files are replaced and
 * POST /reload (as SIGHUP) makes new STARTTLS sessions use the new certificate; a key that does
 * not match its certificate is refused (500) and the old pair stays in use.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, copyFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startNode, writeNodeConfig } from './harness/node.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
const noOpenssl = openssl.error || openssl.status !== 0 ? 'openssl is needed to make test certificates' : false;

function makeCert(dir: string, cn: string): { cert: string; key: string } {
  const cert = path.join(dir, `${cn}.crt`);
  const key = path.join(dir, `${cn}.key`);
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  return { cert, key };
}

/** The CN of the certificate the node shows after STARTTLS. */
function certificateCn(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = '';
    let step = 0;
    socket.setTimeout(10_000, () => { socket.destroy(); reject(new Error(`no answer; got ${JSON.stringify(buf)}`)); });
    socket.on('error', reject);
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      if (step === 0 && /^220 .*\r\n/m.test(buf)) { step = 1; buf = ''; socket.write('EHLO client.test\r\n'); }
      else if (step === 1 && /^250 .*\r\n/m.test(buf)) { step = 2; buf = ''; socket.write('STARTTLS\r\n'); }
      else if (step === 2 && /^220 .*\r\n/m.test(buf)) {
        step = 3;
        socket.removeAllListeners('data');
        const secure = tls.connect({ socket, rejectUnauthorized: false, servername: 'tandem.test' }, () => {
          const cn = secure.getPeerCertificate().subject?.CN;
          secure.destroy();
          resolve(String(cn));
        });
        secure.on('error', reject);
      }
    });
  });
}

test('POST /reload puts a renewed certificate in use for new sessions; a mismatched key keeps the old one', { skip: noOpenssl, timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-tls-reload-'));
  const first = makeCert(dir, 'first.test');
  const second = makeCert(dir, 'second.test');
  const cert = path.join(dir, 'live.crt');
  const key = path.join(dir, 'live.key');
  copyFileSync(first.cert, cert);
  copyFileSync(first.key, key);
  const config = writeNodeConfig(dir, { smtp: { tls: { cert, key } } });
  const node = await startNode({ config, admin: '127.0.0.1:0' });
  const reload = async () => {
    const r = await fetch(`http://127.0.0.1:${node.admin!.port}/reload`, { method: 'POST' });
    return { status: r.status, body: await r.json() as { applied?: string[]; restartNeeded?: string[]; error?: string } };
  };
  assert.equal(await certificateCn(node.smtp.port), 'first.test');

  copyFileSync(second.cert, cert);
  copyFileSync(second.key, key);
  const renewed = await reload();
  assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
  assert.ok(renewed.body.applied!.includes('TLS certificate and key'));
  assert.deepEqual(renewed.body.restartNeeded, []);
  assert.equal(await certificateCn(node.smtp.port), 'second.test', 'new sessions use the renewed certificate');

  copyFileSync(first.key, key); // the key of another certificate
  const bad = await reload();
  assert.equal(bad.status, 500);
  assert.match(bad.body.error!, /reload failed, old configuration kept/);
  assert.equal(await certificateCn(node.smtp.port), 'second.test', 'the old pair stays in use');
  await node.stop();
});
