/**
 * The two-site network harness itself (sites.ts), with real namespaces and real processes: the
 * sites reach each other, the tie-breaker and the host; a cut separates dc1 from dc2 only;
 * restore() heals it; loseSite() kills every process of one site and nothing else; destroy()
 * leaves no namespace and no host interface behind. Skipped without root / network namespaces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { NETNS_MISSING, createSites, type SiteName, type SiteNet } from './sites.ts';
import { spawnProcess, trackProcesses, type Proc } from './procs.ts';

const run = promisify(execFile);
const PORT = 7000; // inside namespaces this test made: nothing else binds there

/** A TCP server in the site that answers "hi from SITE" and closes. */
function server(net: SiteNet, site: SiteName, host: string): Promise<Proc> {
  const code = `require('net').createServer((s) => s.end('hi from ${site}')).listen(${PORT}, '${host}', () => console.log('{"event":"ready"}'))`;
  return spawnProcess(process.execPath, ['-e', code], { netns: net.sites[site].netns, readyMatch: (j) => j.event === 'ready', name: `server-${site}` });
}

const PROBE = `const s = require('net').connect(${PORT}, process.argv[1]); s.setTimeout(700, () => { console.log('timeout'); process.exit(); }); s.on('data', (d) => { console.log(String(d)); process.exit(); }); s.on('error', (e) => console.log(e.code));`;

/** What a fresh TCP connection from inside `from` (or from the host) to host gets. */
async function reach(net: SiteNet, from: SiteName | 'host', host: string): Promise<string> {
  if (from === 'host') {
    return new Promise((resolve) => {
      const s = connect(PORT, host);
      s.setTimeout(700, () => { s.destroy(); resolve('timeout'); });
      s.on('data', (d) => { s.destroy(); resolve(String(d)); });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
  }
  const { stdout } = await run('ip', ['netns', 'exec', net.sites[from].netns, process.execPath, '-e', PROBE, host]);
  return stdout.trim();
}

test('sites: dc1, dc2 and the tie-breaker reach each other and the host; a cut separates dc1 from dc2 only; a site lost takes only its own processes; nothing left after destroy()', { skip: NETNS_MISSING, timeout: 60_000 }, async () => {
  const procs = trackProcesses();
  const net = createSites();
  try {
    const addr = { dc1: net.address('dc1'), dc2: net.address('dc2'), tb: net.address('tb') };
    const servers = { dc1: await server(net, 'dc1', addr.dc1), dc2: await server(net, 'dc2', addr.dc2), tb: await server(net, 'tb', addr.tb) };
    const matrix = async () => ({
      'dc1→dc2': await reach(net, 'dc1', addr.dc2), 'dc2→dc1': await reach(net, 'dc2', addr.dc1),
      'dc1→tb': await reach(net, 'dc1', addr.tb), 'dc2→tb': await reach(net, 'dc2', addr.tb),
      'host→dc1': await reach(net, 'host', addr.dc1), 'host→dc2': await reach(net, 'host', addr.dc2),
    });
    const all = { 'dc1→dc2': 'hi from dc2', 'dc2→dc1': 'hi from dc1', 'dc1→tb': 'hi from tb', 'dc2→tb': 'hi from tb', 'host→dc1': 'hi from dc1', 'host→dc2': 'hi from dc2' };
    assert.deepEqual(await matrix(), all);
    net.cut();
    assert.deepEqual(await matrix(), { ...all, 'dc1→dc2': 'timeout', 'dc2→dc1': 'timeout' }, 'the cut drops dc1↔dc2 only (packets vanish: a timeout, no reset)');
    net.restore();
    assert.deepEqual(await matrix(), all, 'restored');

    net.loseSite('dc2');
    assert.equal((await servers.dc2.exited).signal, 'SIGKILL', 'the dc2 process was killed');
    assert.equal(servers.dc1.exitStatus, undefined, 'dc1 untouched');
    assert.equal(servers.tb.exitStatus, undefined, 'the tie-breaker untouched');
  } finally {
    net.destroy();
    await procs.stopAll();
  }
  const { stdout: namespaces } = await run('ip', ['netns', 'list']);
  for (const ns of [net.router, ...Object.values(net.sites).map((s) => s.netns)]) assert.ok(!namespaces.includes(ns), `${ns} deleted`);
  const { stdout: links } = await run('ip', ['-4', 'addr']);
  assert.ok(!links.includes(net.hostAddress), 'the host\'s end of the link is gone');
});
