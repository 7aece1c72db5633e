/**
 * test/harness/sites.ts — two sites and a tie-breaker on one machine, with network namespaces
 * (root), for the two-site process tests (test/sites.test.ts).
 *
 *            host (the test process: load, sink, status queries)  10.N.0.1
 *                 │ veth
 *            ┌────┴──────────── router namespace (forwards) ─────────────┐
 *            │ 10.N.0.254        10.N.1.1        10.N.2.1      10.N.3.1   │
 *            └──────────────────────┬──────────────┬─────────────┬──────┘
 *                              veth │         veth │        veth │
 *                          dc1 10.N.1.0/24   dc2 10.N.2.0/24   tb 10.N.3.0/24
 *                          (a, b, haproxy,   (c, d, haproxy,   (the third etcd
 *                           etcd, slapd)      etcd, slapd)      member)
 *
 * One namespace per location; every process of a site runs inside its namespace (`ip netns
 * exec`, procs.ts `netns`) and binds an address of its own on the site's interface
 * (`address(site)`). The host reaches every site through the router (one route for 10.N.0.0/16),
 * so the test process talks to the nodes, balancers and directory servers as a client outside
 * the sites would; the host does not forward, so sites reach each other only through the router.
 * N is picked at random among the 10.N.0.0/16 the host has no route or address in, and every
 * name carries a random run id: other jobs on the machine use namespaces too.
 *
 * Exports:
 *   NETNS_MISSING   false, or why namespaces cannot be made here (not root, no CAP_NET_ADMIN,
 *                   no `ip`): a reason for `skip`
 *   createSites(): SiteNet   builds the topology (~50 ms)
 *   SiteNet   hostAddress, sites (dc1, dc2, tb: netns name, subnet), address(site) (a new
 *             address on the site's interface), cut() / restore() (dc1↔dc2 only: both still
 *             reach the tie-breaker and the host), loseSite(site) (SIGKILL to every process group
 *             with a process in the site's namespace), destroy() (processes killed, namespaces
 *             and the host's veth deleted; also done at process exit, so a failed test leaves
 *             nothing behind)
 *
 * The cut is an iptables DROP in the router's FORWARD chain (both directions): packets vanish
 * as on a broken inter-site link, nothing answers with a reset. There is NO `netem` in this
 * kernel, so the ~20 ms inter-site delay of a real deployment is not simulated: the links are
 * as fast as the machine (docs/sites.md says so).
 * What can go wrong: `ip` refusing a command (the error carries its stderr); a namespace left by
 * a test runner killed with SIGKILL (names start with `tandem-`; `ip netns list` shows them,
 * `ip netns del NAME` removes them).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

export type SiteName = 'dc1' | 'dc2' | 'tb';
const SITES: SiteName[] = ['dc1', 'dc2', 'tb'];

function ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
}

/** Runs `ip …`, and on failure throws with its stderr. */
function ipChecked(...args: string[]): string {
  try {
    return ip(...args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

export const NETNS_MISSING: string | false = (() => {
  if (process.getuid?.() !== 0) return 'network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)';
  const probe = `tandem-probe-${process.pid}`;
  try {
    ip('netns', 'add', probe);
    ip('-n', probe, 'link', 'set', 'lo', 'up');
  } catch (err) {
    const e = err as { code?: string; stderr?: string };
    return e.code === 'ENOENT' ? 'the `ip` command (iproute2) is not installed' : `cannot make a network namespace here: ${e.stderr?.trim() ?? String(err)}`;
  } finally {
    try { ip('netns', 'del', probe); } catch { /* not made */ }
  }
  return false;
})();

export interface Site {
  name: SiteName;
  /** The namespace's name (give it to the harness's `netns` options). */
  netns: string;
  /** e.g. 10.57.1.0/24 */
  subnet: string;
}

export interface SiteNet {
  /** The host's address on the link to the router (the test process's own: sink, load). */
  readonly hostAddress: string;
  /** 10.N.0.0/16: every address of the topology. */
  readonly network: string;
  readonly router: string;
  readonly sites: Record<SiteName, Site>;
  /** Adds a new address to the site's interface and returns it (one per process). */
  address(site: SiteName): string;
  /** Drops every packet between dc1 and dc2 at the router (both still reach tb and the host). */
  cut(): void;
  /** Undoes cut() (a second call does nothing). */
  restore(): void;
  /** SIGKILL to the process group of every process in the site's namespace (a site lost). */
  loseSite(site: SiteName): void;
  /** Kills what runs in the namespaces and deletes them (idempotent). */
  destroy(): void;
}

/** The second octets of 10.x.y.z the host already routes or holds. */
function usedOctets(): Set<number> {
  const used = new Set<number>();
  const text = ip('-4', 'route', 'show', 'table', 'all') + ip('-4', 'addr');
  for (const m of text.matchAll(/\b10\.(\d+)\./g)) used.add(Number(m[1]));
  return used;
}

/** The process group of pid (field 5 of /proc/PID/stat), or undefined when it is gone. */
function pgidOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

/** SIGKILLs the groups of every process in namespace ns; returns how many groups. */
function killNamespace(ns: string): number {
  let pids: number[];
  try {
    pids = ip('netns', 'pids', ns).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return 0;
  }
  const groups = new Set(pids.map(pgidOf).filter((g): g is number => g !== undefined && g > 1 && g !== process.pid));
  for (const g of groups) {
    try { process.kill(-g, 'SIGKILL'); } catch { /* gone */ }
  }
  // processes that share a group with something outside would survive a group kill: not ours
  for (const p of pids) {
    try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
  }
  return groups.size;
}

const live = new Set<SiteNet>();
let exitHook = false;

export function createSites(): SiteNet {
  if (NETNS_MISSING) throw new Error(NETNS_MISSING);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => { for (const n of live) n.destroy(); });
  }
  const run = randomBytes(3).toString('hex');
  const used = usedOctets();
  const free = Array.from({ length: 191 }, (_, i) => 64 + i).filter((o) => !used.has(o));
  if (free.length === 0) throw new Error('no free 10.N.0.0/16 on this host for the test network');
  const n = free[Math.floor(Math.random() * free.length)];
  const router = `tandem-${run}-r`;
  const hostIf = `tdm${run}h`;
  const sites = Object.fromEntries(SITES.map((name, i) => [name, { name, netns: `tandem-${run}-${name}`, subnet: `10.${n}.${i + 1}.0/24` }])) as Record<SiteName, Site>;
  const nextHost: Record<SiteName, number> = { dc1: 10, dc2: 10, tb: 10 };
  const octet = (s: SiteName) => SITES.indexOf(s) + 1;
  let cutRules: string[][] = [];
  let destroyed = false;

  const iptables = (...args: string[]) => {
    try {
      execFileSync('ip', ['netns', 'exec', router, 'iptables', '-w', ...args], { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`iptables ${args.join(' ')} in ${router}: ${(err as { stderr?: Buffer }).stderr?.toString().trim() ?? err}`);
    }
  };

  const net: SiteNet = {
    hostAddress: `10.${n}.0.1`,
    network: `10.${n}.0.0/16`,
    router,
    sites,
    address(site) {
      const a = `10.${n}.${octet(site)}.${nextHost[site]++}`;
      ipChecked('-n', sites[site].netns, 'addr', 'add', `${a}/24`, 'dev', 'eth0');
      return a;
    },
    cut() {
      if (cutRules.length) return;
      for (const [from, to] of [[sites.dc1.subnet, sites.dc2.subnet], [sites.dc2.subnet, sites.dc1.subnet]]) {
        const rule = ['FORWARD', '-s', from, '-d', to, '-j', 'DROP'];
        iptables('-I', ...rule);
        cutRules.push(rule);
      }
    },
    restore() {
      for (const rule of cutRules) iptables('-D', ...rule);
      cutRules = [];
    },
    loseSite(site) {
      killNamespace(sites[site].netns);
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      live.delete(net);
      for (const s of SITES) killNamespace(sites[s].netns);
      for (const ns of [...SITES.map((s) => sites[s].netns), router]) {
        try { ip('netns', 'del', ns); } catch { /* not made */ }
      }
      try { ip('link', 'del', hostIf); } catch { /* went with the router's namespace */ }
    },
  };
  live.add(net);
  try {
    ipChecked('netns', 'add', router);
    ipChecked('-n', router, 'link', 'set', 'lo', 'up');
    ipChecked('netns', 'exec', router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    ipChecked('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'host', 'netns', router);
    ipChecked('addr', 'add', `${net.hostAddress}/24`, 'dev', hostIf);
    ipChecked('link', 'set', hostIf, 'up');
    ipChecked('-n', router, 'addr', 'add', `10.${n}.0.254/24`, 'dev', 'host');
    ipChecked('-n', router, 'link', 'set', 'host', 'up');
    ipChecked('route', 'add', net.network, 'via', `10.${n}.0.254`, 'dev', hostIf);
    for (const s of SITES) {
      const { netns } = sites[s];
      const o = octet(s);
      ipChecked('netns', 'add', netns);
      ipChecked('-n', netns, 'link', 'set', 'lo', 'up');
      ipChecked('link', 'add', s, 'netns', router, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
      ipChecked('-n', router, 'addr', 'add', `10.${n}.${o}.1/24`, 'dev', s);
      ipChecked('-n', router, 'link', 'set', s, 'up');
      ipChecked('-n', netns, 'addr', 'add', `10.${n}.${o}.254/24`, 'dev', 'eth0');
      ipChecked('-n', netns, 'link', 'set', 'eth0', 'up');
      ipChecked('-n', netns, 'route', 'add', 'default', 'via', `10.${n}.${o}.1`);
    }
  } catch (err) {
    net.destroy();
    throw err;
  }
  return net;
}
