/**
 * freePort / freeUdpPort: below the kernel's ephemeral range (where outgoing connections take
 * their local ports), never the same port twice in a row of calls, and bindable when returned.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
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
