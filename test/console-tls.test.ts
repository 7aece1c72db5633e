/**
 * admin.tls and `tandem track` with a real node process: the admin API and the console speak
 * HTTPS only (a self-signed certificate made by openssl, trusted through admin.tls.ca); the
 * console's session cookie is Secure; `tandem track --config` finds a delivered message by
 * recipient over HTTPS, and refuses a bad time with exit 1.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { freePort } from './harness/ports.ts';
import { startNode, writeNodeConfig } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { runCli } from './harness/tandem.ts';
import { httpJson } from '../src/util/http-json.ts';
import { readFileSync } from 'node:fs';

const procs = trackProcesses();
after(() => procs.stopAll());

test('admin.tls: HTTPS admin API and console, Secure session cookie; tandem track over HTTPS', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-admin-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  assert.equal(made.status, 0, `openssl req failed: ${made.stderr}`);
  const sink = await startSink();
  const adminPort = await freePort();
  const token = 'tls-test-admin-token-0123456789';
  const config = writeNodeConfig(dir, { node: { id: 't1' }, relay: { host: sink.address }, admin: { listen: `127.0.0.1:${adminPort}`, token, tls: { cert, key, ca: cert } } });
  const node = await startNode({ config, nodeId: 't1' });
  try {
    const ca = readFileSync(cert);
    const health = await httpJson(`https://127.0.0.1:${adminPort}/health`, { ca });
    assert.ok(health.ok && health.status === 200, `HTTPS health: ${JSON.stringify(health)}`);
    const plain = await httpJson(`http://127.0.0.1:${adminPort}/health`, { timeoutMs: 2000 });
    assert.ok(!plain.ok || plain.status === 400, 'plain HTTP is not served');

    const sent = await sendMail(node.smtp.port, 'alice@client.test', ['bob@remote.test'], 'Subject: tls\r\nMessage-ID: <tls-1@client.test>\r\n\r\nhi\r\n');
    assert.ok(sent.ok, sent.response);
    await sink.waitForCount(1, 15_000);
    let out: Awaited<ReturnType<typeof runCli>> | undefined;
    for (let i = 0; i < 50; i++) { // the delivered line reaches the log just after the sink's 250
      out = await runCli(['track', '--to', 'bob@remote.test', '--since', '1h', '--config', config, '--json']);
      if (out.code === 0 && JSON.parse(out.stdout).messages[0]?.status === 'delivered') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(out!.code, 0, out!.stderr);
    const result = JSON.parse(out!.stdout);
    assert.equal(result.nodes.t1, 'ok');
    assert.equal(result.messages.length, 1);
    assert.equal(result.messages[0].queueId, sent.queueId);
    assert.equal(result.messages[0].status, 'delivered');
    assert.deepEqual(result.messages[0].events.map((e: any) => e.event).filter((e: string) => e !== 'routed'), ['received', 'delivered']);
    const text = await runCli(['track', '--message-id', 'tls-1@client.test', '--config', config]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^${sent.queueId!.replace(/\./g, '\\.')}\\s+delivered\\s+from alice@client.test to bob@remote.test`, 'm'));
    const bad = await runCli(['track', '--since', 'last tuesday', '--config', config]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not a time/);

    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    try {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await ctx.newPage();
      await page.goto(`https://127.0.0.1:${adminPort}/console/login`);
      await page.fill('input[name=user]', 'admin');
      await page.fill('input[name=password]', token);
      await Promise.all([page.waitForURL(/\/console\/cluster/), page.click('button')]);
      assert.match(await page.textContent('main') ?? '', /not in a cluster/);
      const cookie = (await ctx.cookies()).find((c) => c.name === 'tandem_console');
      assert.ok(cookie?.secure && cookie.httpOnly && cookie.sameSite === 'Strict', `session cookie flags: ${JSON.stringify(cookie)}`);
    } finally {
      await browser.close();
    }
  } finally {
    await node.stop();
    await sink.stop();
  }
});
