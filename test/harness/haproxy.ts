/*
 * haproxy.ts - a real HAProxy (Debian package, /usr/sbin/haproxy) in front of Tandem nodes, for
 * process-level tests: TCP mode, round robin, HTTP health check of each node's admin /health,
 * PROXY protocol v2 to the nodes' SMTP ports.
 *
 * Exports:
 *   startHaproxy(opts): Promise<Haproxy>  writes a config in a temp folder, starts
 *       `haproxy -db -f CFG` in its own process group (procs.ts), waits until the stats socket
 *       answers and the frontend accepts connections.
 *   runHaproxyConfig(c): Promise<Haproxy>  the same on a config file the caller wrote
 *   Haproxy   smtp (frontend address), statsSocket, serverState(name), waitServerState(name,
 *             state, timeoutMs), runtime(command), stop() (also removes the temp folder),
 *             proc, configFile; haproxy's log lines are in proc.lines
 *   HaproxyBackend, HaproxyOptions
 *
 * Server states are HAProxy's own words from `show stat` (column status): "UP", "DOWN",
 * "MAINT", "DRAIN", and transitions like "UP 1/2" (going down) or "DOWN 1/2" (going up).
 * waitServerState polls the stats socket (every 50 ms) for the exact word.
 * The config is the one `tandem up` writes (src/cli/haproxy-config.ts, mirroring deploy/haproxy.cfg): `noreuseport` (else a port in
 * use is silently shared), `option httpchk GET /health` + `check port <admin port>` with
 * `inter <checkInterMs> fall 2 rise 2`, `option redispatch` + `retries 3`, `balance roundrobin`,
 * `send-proxy-v2` to the SMTP port (not to the check, which is plain HTTP on the admin port).
 * What can go wrong: haproxy not installed (the error says `apt-get install haproxy`); the
 * frontend port taken between freePort() and haproxy's bind (haproxy exits, the error carries
 * its output); a node without an admin address cannot be checked (refused here).
 */
import { mkdtempSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnProcess, type Proc } from './procs.ts';
import { freePort, type HostPort } from './ports.ts';
import { haproxyConfig } from '../../src/cli/haproxy-config.ts';

export const HAPROXY_BIN = '/usr/sbin/haproxy';
/** The backend name in src/cli/haproxy-config.ts. */
const BACKEND = 'tandem_nodes';

export interface HaproxyBackend {
  name: string;
  smtp: HostPort;
  admin: HostPort;
}

export interface HaproxyOptions {
  backends: HaproxyBackend[];
  /** send-proxy-v2 to the nodes (default true); the nodes must list 127.0.0.1 in smtp.proxy_protocol. */
  proxyV2?: boolean;
  /** Health check interval (default 500 ms); a node is DOWN after 2 failed checks, UP after 2 good ones. */
  checkInterMs?: number;
  /**
   * Listen on this address and connect to the nodes from it (HAProxy `source`; the nodes list it
   * in smtp.proxy_protocol) — default 127.0.0.1 and the kernel's choice.
   */
  host?: string;
  /** Run haproxy inside this network namespace (test/harness/sites.ts). */
  netns?: string;
}

export type ServerState = 'UP' | 'DOWN' | 'MAINT' | 'DRAIN' | string;

export interface Haproxy {
  /** Where clients connect (the SMTP frontend). */
  smtp: HostPort;
  statsSocket: string;
  configFile: string;
  /** The server's status in `show stat` (see header). */
  serverState(name: string): Promise<ServerState>;
  /** Resolves once the server's status is exactly `state`; rejects after timeoutMs (default 10 s). */
  waitServerState(name: string, state: ServerState, timeoutMs?: number): Promise<void>;
  /** One runtime API command on the stats socket (e.g. "set server tandem/a state maint"); its answer. */
  runtime(command: string): Promise<string>;
  stop(): Promise<void>;
  proc: Proc;
}

/** The haproxy.cfg for these backends (see header for the choices). */
function harnessConfig(dir: string, port: number, opts: HaproxyOptions): string {
  return haproxyConfig({
    listen: `${opts.host ?? '127.0.0.1'}:${port}`, backends: opts.backends, statsSocket: join(dir, 'haproxy.sock'),
    checkInterMs: opts.checkInterMs ?? 500, proxyV2: opts.proxyV2 ?? true, ...(opts.host ? { source: opts.host } : {}),
  });
}

/** Sends one command to the runtime API socket and returns the whole answer. */
function runtimeCommand(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socketPath);
    let out = '';
    s.setTimeout(2000, () => s.destroy(new Error(`haproxy stats socket: no answer to "${command}" within 2 s`)));
    s.on('connect', () => s.write(`${command}\n`));
    s.on('data', (d) => (out += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(out));
  });
}

/** Whether something accepts TCP connections at hp. */
function accepts(hp: HostPort): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: hp.host, port: hp.port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts haproxy (see header). */
export async function startHaproxy(opts: HaproxyOptions): Promise<Haproxy> {
  if (!existsSync(HAPROXY_BIN)) throw new Error(`${HAPROXY_BIN} not found: install it (apt-get install haproxy)`);
  for (const b of opts.backends) {
    if (!b.admin) throw new Error(`backend ${b.name} has no admin address: start the node with an admin API, it is what HAProxy checks`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tandem-haproxy-'));
  const port = await freePort();
  const configFile = join(dir, 'haproxy.cfg');
  writeFileSync(configFile, harnessConfig(dir, port, opts));
  return runHaproxyConfig({ dir, configFile, smtp: { host: opts.host ?? '127.0.0.1', port }, statsSocket: join(dir, 'haproxy.sock'), backend: BACKEND, servers: opts.backends.length, netns: opts.netns });
}

/**
 * Runs haproxy on a config written by the caller (e.g. the shipped deploy/haproxy.cfg with
 * test addresses): `dir` is removed on stop; `backend` is the backend whose servers are
 * watched, `servers` how many it has; readiness as in startHaproxy.
 */
export async function runHaproxyConfig(c: { dir: string; configFile: string; smtp: HostPort; statsSocket: string; backend: string; servers: number; netns?: string }): Promise<Haproxy> {
  const { dir, configFile, smtp, statsSocket } = c;
  const proc = await spawnProcess(HAPROXY_BIN, ['-db', '-f', configFile], { name: 'haproxy', netns: c.netns });

  const stat = async (): Promise<Map<string, string>> => {
    const csv = await runtimeCommand(statsSocket, 'show stat');
    const states = new Map<string, string>();
    for (const line of csv.split('\n')) {
      const f = line.split(',');
      if (f[0] === c.backend && f[1] !== 'BACKEND') states.set(f[1], f[17]);
    }
    return states;
  };
  const serverState = async (name: string): Promise<ServerState> => {
    const state = (await stat()).get(name);
    if (state === undefined) throw new Error(`haproxy has no server ${name} in backend ${c.backend}`);
    return state;
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitStatus) throw new Error(`haproxy exited at start (code ${proc.exitStatus.code}):\n${proc.output()}`);
    if (existsSync(statsSocket) && (await stat().then((m) => m.size === c.servers, () => false)) && (await accepts(smtp))) break;
    if (Date.now() > deadline) {
      await proc.killHard();
      throw new Error(`haproxy did not come up within 10 s:\n${proc.output()}`);
    }
    await pause(20);
  }

  return {
    smtp, statsSocket, configFile, proc, serverState,
    async waitServerState(name, state, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        last = await serverState(name);
        if (last === state) return;
        if (Date.now() > end) throw new Error(`haproxy server ${name} is "${last}", not "${state}", after ${timeoutMs} ms`);
        await pause(50);
      }
    },
    runtime: (command) => runtimeCommand(statsSocket, command),
    async stop() {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
