/**
 * freePort / freeUdpPort: below the kernel's ephemeral range (where outgoing connections take
 * their local ports), never the same port twice in a row of calls, and bindable when returned;
 * never the same port to two processes that share a TANDEM_PORT_CLAIMS folder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, freeUdpPort } from './free-port.ts';

const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);

test('200 TCP ports: all distinct, all below the ephemeral range, each one bindable', async () => {
  const ports: number[] = [];
  for (let i = 0; i < 200; i++) ports.push(await freePort());
  assert.equal(new Set(ports).size, ports.length, 'a port handed out twice');
  for (const p of ports) assert.ok(p >= 10_000 && p < ephemeralStart, `port ${p} is not in [10000, ${ephemeralStart})`);
  for (const p of ports.slice(0, 20)) {
    const srv = createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: '127.0.0.1', port: p }, resolve);
    });
    await new Promise((r) => srv.close(r));
  }
});

test('UDP ports likewise, and distinct from the TCP ones handed out before', async () => {
  const tcp = await freePort();
  const udp: number[] = [];
  for (let i = 0; i < 50; i++) udp.push(await freeUdpPort());
  assert.equal(new Set([tcp, ...udp]).size, 51);
  for (const p of udp) assert.ok(p >= 10_000 && p < ephemeralStart, `port ${p}`);
});

test('processes sharing TANDEM_PORT_CLAIMS never hand out the same port; without it they do', async () => {
  // two processes, 300 ports each, from the same ~22,000: without claims about 4 ports are
  // expected to be handed to both (the check only sees ports that are bound at that moment)
  const moduleUrl = new URL('./free-port.ts', import.meta.url).href;
  const script = `import(${JSON.stringify(moduleUrl)}).then(async ({ freePort }) => { const p = []; for (let i = 0; i < 300; i++) p.push(await freePort()); console.log(JSON.stringify(p)); })`;
  const run = (env: NodeJS.ProcessEnv) => new Promise<number[]>((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '-e', script], { env }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout))));
  });
  const dir = mkdtempSync(join(tmpdir(), 'tandem-port-claims-'));
  try {
    const env = { ...process.env, TANDEM_PORT_CLAIMS: dir };
    const [a, b] = await Promise.all([run(env), run(env)]);
    const shared = a.filter((p) => b.includes(p));
    assert.deepEqual(shared, [], 'ports handed out to both processes');
    assert.equal(readdirSync(dir).length, 600, 'one claim a port');
    const unclaimed = { ...process.env };
    delete unclaimed.TANDEM_PORT_CLAIMS;
    let overlaps = 0;
    for (let round = 0; round < 3 && overlaps === 0; round++) {
      const [c, d] = await Promise.all([run(unclaimed), run(unclaimed)]);
      overlaps = c.filter((p) => d.includes(p)).length;
    }
    assert.ok(overlaps > 0, 'without claims, two processes should have shared a port at least once in 3 rounds (the test would show nothing)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
