/**
 * util/free-port.ts — a port nobody uses right now, for a configuration that must name its ports
 * before the processes start (`tandem up`, and the test harness).
 *
 * The port is taken below the kernel's ephemeral range (Linux: net.ipv4.ip_local_port_range,
 * 32768–60999 by default), at random from 10000 up to it, and checked by binding it. A port the
 * kernel hands out for "port 0" comes from the ephemeral range, which is also where every
 * outgoing connection gets its local port: between the check and the real bind, seconds later
 * in `tandem up`, any connection made on the machine could take it, and the listener then fails
 * with EADDRINUSE (seen in the test suite). Outside that range only another listener can. A port
 * handed out by this process is not handed out again for a while. Where the range leaves no room
 * below it, the kernel's choice (port 0) is used as before.
 *
 * Processes that share a folder in TANDEM_PORT_CLAIMS (the test suite's run, test/run.sh: two
 * test files at a time, each starting nodes, slapd, etcd on ports of their own) also do not hand
 * out each other's ports: each port is claimed there with an exclusive create before it is
 * returned, and a port already claimed is passed over. Without it, one file's node could find
 * its port taken by the other file's listener between the check and its bind (EADDRINUSE, seen
 * in CI). The claims are never given back: the folder goes with the run.
 *
 * What can go wrong: another process may still bind the port first; that bind then fails loudly
 * (a race the callers accept). A claims folder that cannot be written throws.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';

const LOWEST = 10_000;
/** Ports handed out lately by this process, oldest first: not handed out again while listed. */
const recent: number[] = [];
const RECENT_MAX = 2048;

let ephemeral: number | undefined;

/** The first port of the kernel's ephemeral range (Linux), or the usual default; read once per process. */
function ephemeralStart(): number {
  if (ephemeral !== undefined) return ephemeral;
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    ephemeral = Number.isInteger(lo) && lo > 0 ? lo : 32768;
  } catch {
    ephemeral = 32768;
  }
  return ephemeral;
}

function remember(port: number): number {
  recent.push(port);
  if (recent.length > RECENT_MAX) recent.shift();
  return port;
}

/** Claim `port` in TANDEM_PORT_CLAIMS, if set: false when another process of the run has it. */
function claim(port: number): boolean {
  const dir = process.env.TANDEM_PORT_CLAIMS;
  if (!dir) return true;
  try {
    closeSync(openSync(join(dir, String(port)), 'wx'));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** Bind `port` (0: the kernel's choice) and close it; resolves with the port bound, or undefined if taken. */
type Probe = (host: string, port: number) => Promise<number | undefined>;

const tcpProbe: Probe = (host, port) =>
  new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => (port !== 0 && (err.code === 'EADDRINUSE' || err.code === 'EACCES') ? resolve(undefined) : reject(err)));
    srv.listen({ host, port, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error(`freePort: unexpected address ${String(addr)}`));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });

const udpProbe: Probe = (host, port) =>
  new Promise((resolve, reject) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    sock.once('error', (err: NodeJS.ErrnoException) => (port !== 0 && (err.code === 'EADDRINUSE' || err.code === 'EACCES') ? resolve(undefined) : reject(err)));
    sock.bind(port, host, () => {
      const bound = sock.address().port;
      sock.close(() => resolve(bound));
    });
  });

async function pick(host: string, probe: Probe): Promise<number> {
  const top = ephemeralStart();
  if (top - LOWEST >= 1000) {
    for (let i = 0; i < 50; i++) {
      const port = randomInt(LOWEST, top);
      if (recent.includes(port)) continue;
      if ((await probe(host, port)) !== undefined && claim(port)) return remember(port);
    }
  }
  return remember((await probe(host, 0))!);
}

/** A currently unused TCP port on `host`, below the ephemeral range. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return pick(host, tcpProbe);
}

/** A currently unused UDP port on `host`, below the ephemeral range. */
export function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  return pick(host, udpProbe);
}
