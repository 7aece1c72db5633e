/**
 * test/harness/slapd.ts — real OpenLDAP servers (Debian's slapd) for process-level tests and
 * benchmarks: a master with a syncrepl shadow, or two masters replicating each other.
 *
 * Exports:
 *   startMasterShadow(opts?): Promise<LdapSetup>   provider + consumer (refreshAndPersist)
 *   startTwoMasters(opts?): Promise<LdapSetup>     multi-provider ("mirror mode") pair
 *   startTwoSites(opts?): Promise<LdapSetup>       a master per site (dc1, dc2) replicating each
 *                                                  other, each with a shadow of its own site
 *   LdapSetup      servers, suffix, rootDn, rootPw, dir, stopAll()
 *   SlapdServer    name, url, port, site?, kill() (SIGKILL), stop(), start() (same config and data)
 *   waitForEntry(url, dn, present, timeoutMs?)    polls a base search until the entry is (not) there
 *   directorySection(setup, roles, extra?)         the directory: config section for a node (with
 *                                                  each server's site when it has one)
 *   SLAPD_AVAILABLE  whether /usr/sbin/slapd exists (tests skip with a message otherwise)
 *
 * Each server: slapd.conf style (slapd -f), mdb in a temp folder, schemas core, cosine,
 * inetorgperson, misc and Tandem's own (deploy/ldap/tandem.schema), a free loopback port, run
 * with `-d 0` so it stays in the foreground in its own process group (procs.ts), readiness by
 * polling an anonymous bind (no sleeps). Nothing is seeded: `tandem dir init` writes the base
 * entries on the (first) master, and replication brings them to the other server.
 * What can go wrong: slapd not installed (SLAPD_AVAILABLE false); a port taken between
 * freePort() and slapd's bind (slapd exits, the error carries its output); AppArmor on Ubuntu
 * (not Debian) refusing the temp folder.
 * `placement` (SetupOptions) puts each server on its own address in a network namespace (sites.ts).
 * Config keys: none (these are slapd's own).
 */
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'ldapts';
import { freePort } from './ports.ts';
import { spawnProcess, type Proc } from './procs.ts';

const SLAPD = '/usr/sbin/slapd';
const SCHEMA_DIR = '/etc/ldap/schema';
const MODULE_DIR = '/usr/lib/ldap';
const TANDEM_SCHEMA = fileURLToPath(new URL('../../deploy/ldap/tandem.schema', import.meta.url));

export const SLAPD_AVAILABLE = existsSync(SLAPD);

export interface SlapdServer {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  /** startTwoSites: the site the server stands for. */
  readonly site: string | undefined;
  readonly proc: Proc | undefined;
  /** SIGKILL the server (its data stays for start()). */
  kill(): Promise<void>;
  /** SIGTERM, SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** Start it again on the same port with the same data; resolves once it answers a bind. */
  start(): Promise<void>;
}

export interface LdapSetup {
  servers: SlapdServer[];
  suffix: string;
  rootDn: string;
  rootPw: string;
  dir: string;
  stopAll(): Promise<void>;
}

export interface SetupOptions {
  suffix?: string;
  rootPw?: string;
  /**
   * Where each server runs, in the setup's order (default 127.0.0.1 in the host's network): its
   * address and a network namespace to run in (test/harness/sites.ts). `site` overrides the
   * setup's own (startTwoMasters then stands for a master per site).
   */
  placement?: Array<{ host: string; netns?: string; site?: string }>;
}

interface ServerSpec {
  name: string;
  port: number;
  /** provider: syncprov only; consumer of `peer`; mirror: both, with serverID. */
  role: 'provider' | 'consumer' | 'mirror';
  peerPort?: number;
  /** Its own address and its peer's (default 127.0.0.1; set from SetupOptions.placement). */
  host?: string;
  peerHost?: string;
  netns?: string;
  serverId?: number;
  site?: string;
}

/** Master (provider) + shadow (syncrepl consumer of the master). */
export async function startMasterShadow(opts: SetupOptions = {}): Promise<LdapSetup> {
  const [mp, sp] = [await freePort(), await freePort()];
  return startSetup(opts, [
    { name: 'master', port: mp, role: 'provider' },
    { name: 'shadow', port: sp, role: 'consumer', peerPort: mp },
  ]);
}

/** Two providers replicating each other (multi-provider). */
export async function startTwoMasters(opts: SetupOptions = {}): Promise<LdapSetup> {
  const [ap, bp] = [await freePort(), await freePort()];
  return startSetup(opts, [
    { name: 'master-a', port: ap, role: 'mirror', peerPort: bp, serverId: 1 },
    { name: 'master-b', port: bp, role: 'mirror', peerPort: ap, serverId: 2 },
  ]);
}

/**
 * Two sites: master-dc1 and master-dc2 replicating each other (multi-provider, serverID 1 and 2),
 * shadow-dc1 a consumer of master-dc1, shadow-dc2 of master-dc2. Servers in that order.
 */
export async function startTwoSites(opts: SetupOptions = {}): Promise<LdapSetup> {
  const [m1, m2, s1, s2] = [await freePort(), await freePort(), await freePort(), await freePort()];
  return startSetup(opts, [
    { name: 'master-dc1', port: m1, role: 'mirror', peerPort: m2, serverId: 1, site: 'dc1' },
    { name: 'master-dc2', port: m2, role: 'mirror', peerPort: m1, serverId: 2, site: 'dc2' },
    { name: 'shadow-dc1', port: s1, role: 'consumer', peerPort: m1, site: 'dc1' },
    { name: 'shadow-dc2', port: s2, role: 'consumer', peerPort: m2, site: 'dc2' },
  ]);
}

async function startSetup(opts: SetupOptions, specs: ServerSpec[]): Promise<LdapSetup> {
  const suffix = opts.suffix ?? 'dc=example,dc=org';
  const rootDn = `cn=admin,${suffix}`;
  const rootPw = opts.rootPw ?? 'secret';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-slapd-'));
  if (opts.placement) {
    const hostOf = (port: number | undefined) => opts.placement![specs.findIndex((s) => s.port === port)]?.host;
    specs = specs.map((s, i) => ({ ...s, host: opts.placement![i].host, netns: opts.placement![i].netns, site: opts.placement![i].site ?? s.site, peerHost: hostOf(s.peerPort) }));
  }
  const servers = specs.map((spec) => new Server(spec, dir, writeConf(dir, spec, suffix, rootDn, rootPw)));
  const setup: LdapSetup = {
    servers, suffix, rootDn, rootPw, dir,
    stopAll: async () => { await Promise.all(servers.map((s) => s.stop())); },
  };
  try {
    for (const s of servers) await s.start();
  } catch (err) {
    await setup.stopAll();
    throw err;
  }
  return setup;
}

function writeConf(dir: string, spec: ServerSpec, suffix: string, rootDn: string, rootPw: string): string {
  const d = path.join(dir, spec.name);
  mkdirSync(path.join(d, 'db'), { recursive: true });
  const lines = [
    ...['core', 'cosine', 'inetorgperson', 'misc'].map((s) => `include ${SCHEMA_DIR}/${s}.schema`),
    `include ${TANDEM_SCHEMA}`,
    `pidfile ${d}/slapd.pid`,
    `argsfile ${d}/slapd.args`,
    `modulepath ${MODULE_DIR}`,
    'moduleload back_mdb',
    'moduleload syncprov',
    'sizelimit unlimited',
    ...(spec.serverId ? [`serverID ${spec.serverId}`] : []),
    '',
    'database mdb',
    'maxsize 104857600',
    `suffix "${suffix}"`,
    `rootdn "${rootDn}"`,
    `rootpw ${rootPw}`,
    `directory ${d}/db`,
    'index objectClass eq',
    'index entryCSN,entryUUID eq',
    'index mailLocalAddress,associatedDomain,tandemRouteKey eq',
  ];
  if (spec.role !== 'provider') {
    lines.push(
      `syncrepl rid=00${spec.serverId ?? 1} provider=ldap://${spec.peerHost ?? '127.0.0.1'}:${spec.peerPort} type=refreshAndPersist`,
      `  retry="1 +" timeout=1 network-timeout=2 searchbase="${suffix}"`,
      `  bindmethod=simple binddn="${rootDn}" credentials=${rootPw}`,
    );
  }
  if (spec.role === 'consumer') lines.push(`updateref ldap://${spec.peerHost ?? '127.0.0.1'}:${spec.peerPort}`);
  if (spec.role === 'mirror') lines.push('multiprovider on');
  if (spec.role !== 'consumer') lines.push('overlay syncprov', 'syncprov-checkpoint 100 10', 'syncprov-sessionlog 100');
  const file = path.join(d, 'slapd.conf');
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

class Server implements SlapdServer {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly site: string | undefined;
  proc: Proc | undefined;
  private readonly netns: string | undefined;

  constructor(spec: ServerSpec, private readonly dir: string, private readonly conf: string) {
    this.name = spec.name;
    this.port = spec.port;
    this.site = spec.site;
    this.netns = spec.netns;
    this.url = `ldap://${spec.host ?? '127.0.0.1'}:${spec.port}`;
  }

  async start(): Promise<void> {
    const proc = await spawnProcess(SLAPD, ['-f', this.conf, '-h', `${this.url}/`, '-d', '0'], {
      name: `slapd-${this.name}`, env: { ...process.env, LDAPNOINIT: '1' }, logFile: path.join(this.dir, this.name, 'slapd.log'), netns: this.netns,
    });
    this.proc = proc;
    const end = Date.now() + 10_000;
    for (;;) {
      if (proc.exitStatus) throw new Error(`slapd ${this.name} exited (${JSON.stringify(proc.exitStatus)}):\n${proc.output()}`);
      if (await canBind(this.url)) return;
      if (Date.now() > end) {
        await proc.killHard();
        throw new Error(`slapd ${this.name} did not answer a bind on ${this.url} within 10 s:\n${proc.output()}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async kill(): Promise<void> {
    await this.proc?.killHard();
  }

  async stop(): Promise<void> {
    await this.proc?.stop(5_000);
  }
}

async function canBind(url: string): Promise<boolean> {
  const c = new Client({ url, connectTimeout: 500, timeout: 500 });
  try {
    await c.bind('', '');
    return true;
  } catch {
    return false;
  } finally {
    await c.unbind().catch(() => undefined);
  }
}

/** Poll until `dn` is present (or absent) on the server at url; returns the ms it took. */
export async function waitForEntry(url: string, dn: string, present: boolean, timeoutMs = 10_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const c = new Client({ url, connectTimeout: 500, timeout: 1000 });
    let found = false;
    try {
      found = (await c.search(dn, { scope: 'base', attributes: ['1.1'] })).searchEntries.length > 0;
    } catch {
      found = false;
    } finally {
      await c.unbind().catch(() => undefined);
    }
    if (found === present) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${dn} still ${present ? 'absent' : 'present'} on ${url} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Poll until every server holds the same entries (DNs and their modifyTimestamp/entryCSN) as the first: replication caught up. */
export async function waitForReplicas(setup: LdapSetup, timeoutMs = 15_000): Promise<number> {
  const t0 = Date.now();
  const snapshot = async (url: string): Promise<string | undefined> => {
    const c = new Client({ url, connectTimeout: 500, timeout: 2000 });
    try {
      await c.bind(setup.rootDn, setup.rootPw);
      const { searchEntries } = await c.search(setup.suffix, { scope: 'sub', attributes: ['entryCSN'] });
      return searchEntries.map((e) => `${e.dn.toLowerCase()} ${String(e.entryCSN ?? '')}`).sort().join('\n');
    } catch {
      return undefined;
    } finally {
      await c.unbind().catch(() => undefined);
    }
  };
  for (;;) {
    const [first, ...rest] = await Promise.all(setup.servers.map((s) => snapshot(s.url)));
    if (first !== undefined && rest.every((r) => r === first)) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`the directory servers still differ after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The directory: section of a node config for `setup`, servers in the given order and roles. */
export function directorySection(setup: LdapSetup, roles: Array<'master' | 'shadow'>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    servers: setup.servers.map((s, i) => ({ url: s.url, role: roles[i], ...(s.site ? { site: s.site } : {}) })),
    base_dn: setup.suffix,
    bind_dn: setup.rootDn,
    bind_password: setup.rootPw,
    connect_timeout: '500ms',
    operation_timeout: '1s',
    server_backoff: '500ms',
    ...extra,
  };
}
