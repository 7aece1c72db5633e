/**
 * cli/up.ts — `tandem up`: a local cluster on one machine for trying Tandem out.
 *
 * N nodes (default 2, ids a, b, …) as separate `tandem start` processes, each in its own process
 * group, over one spool root under --dir, with the demo's tables (example.test: alice, bob,
 * postmaster, team) delivered into Maildirs under <dir>/mail; and HAProxy in front when it is
 * installed (PROXY protocol v2, HTTP health checks of each node's /health). The front door is
 * --listen (HAProxy, or node a when there is no HAProxy; the others take the next ports).
 * Prints the addresses (and one JSON line {"event":"up", …} on stdout for scripts); Ctrl-C
 * (SIGINT) or SIGTERM stops everything: the nodes finish their deliveries in flight. Every node
 * writes <dir>/run/<id>.pid (--pid-file, also in the printed restart command), so that a node
 * restarted by hand is stopped by Ctrl-C too.
 * On a loopback front door HAProxy connects to the nodes from 127.0.0.2 and only that address
 * must send a PROXY header: a client may still connect straight to a node.
 * Kill a node's process group (`kill -9 -PGID`, printed) to watch its spool being taken over.
 * What can go wrong: a port in use (the node's error is printed, everything started is stopped;
 * pick another --listen); HAProxy failing to start (its output is printed).
 * --sites S (2–3) --pairs P: S sites (dc1, dc2, …) of P pairs of partners each, replicated
 * storage (each node's spool on its own folder <dir>/disk-<id>, a copy at its partner and one in
 * the next site before the 250: cluster.replication.remote_copy), a cluster CA and node
 * certificates made with openssl (kept in <dir>/certs), one HAProxy per site (the site's front
 * door: --listen for dc1, the next ports for the others), and a 3-member etcd as witness (one
 * member per site and a tie-breaker) when etcd is installed. Prints how to lose a site.
 * Files: <dir>/cluster.yaml (rewritten at each start with fresh ports; spools and mail are kept),
 * <dir>/haproxy.cfg, <dir>/log/<id>.log, <dir>/log/tracking.log.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import YAML from 'yaml';
import { prepareDemo, TANDEM_BIN } from './demo.ts';
import { parseHostPort } from '../config/schema.ts';
import { haproxyConfig } from './haproxy-config.ts';
import { EXIT } from './exit-codes.ts';
import { freePort, freeUdpPort } from '../util/free-port.ts';
import { pidAlive } from '../util/pid.ts';
import { httpJson } from '../util/http-json.ts';
import { makeCa, makeNodeCert, opensslMissing } from '../cluster/index.ts';

// main.js beside the compiled up.js (dist/), main.ts under tsx
const CLI_MAIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './main.ts' : './main.js', import.meta.url));

interface UpOptions { nodes: string; dir: string; listen: string; haproxy: boolean; sites?: string; pairs?: string }
interface Member { id: string; site: string; partner: string; smtp: string; admin: string; heartbeat: string; replication?: string; proc?: ChildProcess }

const fmt = (host: string, port: number) => `${host}:${port}`;

function haproxyInstalled(): boolean {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The cluster secret, made once and kept in <dir>/cluster.secret. */
async function clusterSecret(dir: string): Promise<string> {
  const file = path.join(dir, 'cluster.secret');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    const secret = randomBytes(24).toString('hex');
    await writeFile(file, secret + '\n', { mode: 0o600 });
    return secret;
  }
}

/**
 * Start one process in its own group, logging to `log`; `spawned` gets it at once (so that a
 * failing start-up can stop it too); resolves on its ready line.
 */
function startProcess(cmd: string, args: string[], log: string, ready: (line: string) => boolean, name: string, spawned: (c: ChildProcess) => void): Promise<ChildProcess> {
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  spawned(child);
  const out = createWriteStream(log, { flags: 'a' });
  const tail: string[] = [];
  return new Promise((resolve, reject) => {
    let done = false;
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        out.write(line + '\n');
        tail.push(line);
        if (tail.length > 20) tail.shift();
        if (!done && ready(line)) {
          done = true;
          resolve(child);
        }
      });
    }
    child.once('error', (err) => {
      if (!done) {
        done = true;
        reject(new Error(`${name} could not be started: ${err.message}`));
      }
    });
    child.once('exit', (code, signal) => {
      if (!done) {
        done = true;
        reject(new Error(`${name} exited (${signal ?? `code ${code}`}) before it was ready:\n${tail.join('\n')}`));
      }
    });
  });
}

function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect({ host, port }, () => { s.destroy(); resolve(); });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > end) reject(new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/**
 * Wait until a node's /health answers 200 (ready). A node that has said "ready" may still refuse
 * mail for a moment: at a cluster's start a peer that came up first can have taken its spool over
 * (it never heard of it) and must hand it back first. "up" means every node takes mail.
 */
async function waitHealthy(admin: string, name: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await httpJson(`http://${admin}/health`, { timeoutMs: 2000 });
    if (r.ok && r.status === 200) return;
    if (Date.now() > end) throw new Error(`${name} is not ready after ${timeoutMs / 1000} s (health: ${r.ok ? `${r.status} ${JSON.stringify(r.body?.status ?? '')}` : r.error})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM to a process group, SIGKILL after `ms`; resolves when the leader has exited. */
function stopGroup(child: ChildProcess, ms = 30_000): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, ms);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    try { process.kill(-child.pid!, 'SIGTERM'); } catch { resolve(); }
  });
}

/**
 * Stop a node started by hand from the restart command (its pid file names it): SIGTERM, then
 * wait until it has exited (SIGKILL after 30 s). A pid file of a process that is gone, or that
 * is no Tandem node of this cluster (the pid was reused), is left alone.
 */
async function stopRestarted(file: string, configFile: string, childPid: number | undefined): Promise<void> {
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === childPid) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes(configFile)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const end = Date.now() + 30_000;
  while (pidAlive(pid)) {
    if (Date.now() > end) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } return; }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The etcd binary, when Debian's etcd-server (or another) is installed. */
function etcdBinary(): string | undefined {
  try {
    execFileSync('etcd', ['--version'], { stdio: 'ignore' });
    return 'etcd';
  } catch {
    return undefined;
  }
}

/**
 * A 3-member etcd on the front door's host, one member per site and a tie-breaker ("third"),
 * as in production (docs/sites.md): the witness. Data under <dir>/etcd/<name>; resolves once
 * every member serves clients (which needs a quorum, so the three start together).
 */
async function startEtcd(bin: string, dir: string, host: string, names: string[], spawned: (c: ChildProcess) => void): Promise<Array<{ name: string; url: string; proc: ChildProcess }>> {
  const specs = [];
  for (const name of names) specs.push({ name, client: fmt(host, await freePort(host)), peer: fmt(host, await freePort(host)) });
  const initial = specs.map((x) => `${x.name}=http://${x.peer}`).join(',');
  await mkdir(path.join(dir, 'etcd'), { recursive: true });
  return Promise.all(specs.map(async (x) => {
    // a fresh cluster at every start: the witness holds leases and locks only, nothing to keep
    const data = path.join(dir, 'etcd', `${x.name}-${Date.now()}`);
    const proc = await startProcess(bin, [
      '--name', x.name, '--data-dir', data,
      '--listen-client-urls', `http://${x.client}`, '--advertise-client-urls', `http://${x.client}`,
      '--listen-peer-urls', `http://${x.peer}`, '--initial-advertise-peer-urls', `http://${x.peer}`,
      '--initial-cluster', initial, '--initial-cluster-state', 'new', '--initial-cluster-token', `tandem-up-${process.pid}`,
      '--heartbeat-interval', '50', '--election-timeout', '500', '--logger', 'zap', '--log-outputs', 'stderr',
    ], path.join(dir, 'log', `etcd-${x.name}.log`), (line) => /serving client traffic|ready to serve client requests/.test(line), `etcd member ${x.name}`, spawned);
    return { name: x.name, url: `http://${x.client}`, proc };
  }));
}

export async function runUp(opts: UpOptions): Promise<void> {
  const siteCount = Number(opts.sites ?? '1');
  const pairs = Number(opts.pairs ?? '1');
  if (!Number.isInteger(siteCount) || siteCount < 1 || siteCount > 3 || !Number.isInteger(pairs) || pairs < 1 || siteCount * pairs * 2 > 26) {
    console.error('tandem up: --sites must be 1 to 3 and --pairs at least 1 (26 nodes at most)');
    process.exit(EXIT.USAGE);
  }
  // sites: replicated storage (no disk shared between sites), pairs of partners in each site
  const multiSite = siteCount > 1;
  if (multiSite && opensslMissing) {
    console.error(`tandem up --sites: ${opensslMissing}`);
    process.exit(EXIT.UNAVAILABLE);
  }
  const n = multiSite ? siteCount * pairs * 2 : Number(opts.nodes);
  if (!Number.isInteger(n) || n < 2 || n > 26) {
    console.error('tandem up: --nodes must be 2 to 26');
    process.exit(EXIT.USAGE);
  }
  const front = parseHostPort(opts.listen);
  const useHaproxy = opts.haproxy && haproxyInstalled();
  const dir = path.resolve(opts.dir);
  const demo = await prepareDemo(dir);
  await mkdir(path.join(dir, 'log'), { recursive: true });
  const host = front.host;
  const members: Member[] = [];
  const siteNames = Array.from({ length: siteCount }, (_, i) => (multiSite ? `dc${i + 1}` : 'local'));
  const perSite = n / siteCount;
  for (let i = 0; i < n; i++) {
    const id = String.fromCharCode(97 + i);
    // one front door per site behind HAProxy (the --listen port, then the next ones)
    const smtpPort = useHaproxy ? await freePort(host) : front.port + siteCount - 1 + i;
    members.push({
      id, site: siteNames[Math.floor(i / perSite)],
      partner: String.fromCharCode(97 + (multiSite ? i ^ 1 : (i + 1) % n)),
      smtp: fmt(host, smtpPort), admin: fmt(host, await freePort(host)), heartbeat: fmt(host, await freeUdpPort(host)),
      ...(multiSite ? { replication: fmt(host, await freePort(host)) } : {}),
    });
  }
  const frontOf = (site: number) => fmt(front.host, front.port + site);
  const base = YAML.parse(await readFile(demo.configFile, 'utf8'));
  // the balancer's own source address, so that only it must send PROXY (a loopback front door:
  // every 127/8 address is local; otherwise the nodes' host is the balancer's too)
  const balancer = /^127\./.test(host) ? (host === '127.0.0.2' ? '127.0.0.3' : '127.0.0.2') : host;
  const secret = await clusterSecret(dir);
  const consoleToken = createHash('sha256').update(`console:${secret}`).digest('hex').slice(0, 24);
  const config = {
    ...base,
    node: { ...base.node, id: 'a' },
    smtp: { ...base.smtp, ...(useHaproxy ? { proxy_protocol: [balancer] } : {}) },
    // the console needs a login: a token derived from the cluster secret (the same on every run)
    admin: { listen: members[0].admin, token: consoleToken },
    cluster: {
      secret,
      nodes: members.map((m) => ({ id: m.id, heartbeat: m.heartbeat, smtp: m.smtp, admin: m.admin, site: m.site, partner: m.partner, ...(m.replication ? { replication: m.replication } : {}) })),
      ...(multiSite ? {
        storage: 'replicated',
        replication: { remote_copy: true, tls: { ca: path.join(dir, 'certs', 'cluster-ca.pem'), cert: path.join(dir, 'certs', 'node-{node}.pem'), key: path.join(dir, 'certs', 'node-{node}.key') } },
      } : {}),
    } as Record<string, unknown>,
  };
  if (multiSite) {
    // the cluster CA and one certificate per node, made once (kept across starts)
    const certs = path.join(dir, 'certs');
    await mkdir(certs, { recursive: true });
    const caFiles = { cert: path.join(certs, 'cluster-ca.pem'), key: path.join(certs, 'cluster-ca.key') };
    const have = await readFile(caFiles.cert).then(() => true, () => false);
    const ca = have ? caFiles : makeCa(certs, 'cluster-ca', 3650);
    for (const m of members) {
      if (!(await readFile(path.join(certs, `node-${m.id}.pem`)).then(() => true, () => false))) makeNodeCert(certs, ca, m.id, `node-${m.id}`, 3650);
    }
  }
  const configFile = path.join(dir, 'cluster.yaml');
  await writeFile(configFile, `# written by tandem up (ports change at every start)\n${YAML.stringify(config)}`);

  const runDir = path.join(dir, 'run');
  await mkdir(runDir, { recursive: true });
  const pidFile = (id: string) => path.join(runDir, `${id}.pid`);
  const started: ChildProcess[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('\nstopping the local cluster (deliveries in flight finish first)…\n');
    await Promise.all([...started.map((c) => stopGroup(c)), ...members.map((m) => stopRestarted(pidFile(m.id), configFile, m.proc?.pid))]);
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(EXIT.OK));
  process.on('SIGTERM', () => void stopAll(EXIT.OK));

  const etcdBin = multiSite ? etcdBinary() : undefined;
  let etcd: Array<{ name: string; url: string; proc: ChildProcess }> = [];
  // each node's own "disk" in replicated mode: <dir>/disk-<id>
  const spoolArgs = (m: Member) => (multiSite ? ['--spool', path.join(dir, `disk-${m.id}`, 'spool')] : []);
  const startCommand = (m: Member) => [CLI_MAIN, 'start', '--config', configFile, '--node-id', m.id, '--listen', m.smtp, '--admin', m.admin, ...spoolArgs(m), '--pid-file', pidFile(m.id)];
  try {
    if (etcdBin) {
      etcd = await startEtcd(etcdBin, dir, host, [...siteNames, 'third'], (c) => started.push(c));
      (config.cluster as Record<string, unknown>).witness = { etcd: { endpoints: etcd.map((e) => e.url) } };
      await writeFile(configFile, `# written by tandem up (ports change at every start)\n${YAML.stringify(config)}`);
    }
    await Promise.all(members.map(async (m) => {
      m.proc = await startProcess(process.execPath, [...process.execArgv, ...startCommand(m)],
        path.join(dir, 'log', `${m.id}.log`), (line) => line.includes('"event":"ready"'), `node ${m.id}`, (c) => started.push(c));
    }));
    await Promise.all(members.map((m) => waitHealthy(m.admin, `node ${m.id}`, 120_000)));
    if (useHaproxy) {
      for (const [i, site] of siteNames.entries()) {
        const name = multiSite ? `haproxy-${site}` : 'haproxy';
        const cfg = path.join(dir, `${name}.cfg`);
        await writeFile(cfg, haproxyConfig({
          listen: frontOf(i),
          ...(balancer !== host ? { source: balancer } : {}),
          backends: members.filter((m) => m.site === site).map((m) => ({ name: m.id, smtp: parseHostPort(m.smtp), admin: parseHostPort(m.admin) })),
        }));
        const log = openSync(path.join(dir, 'log', `${name}.log`), 'a');
        const lb = spawn('haproxy', ['-db', '-f', cfg], { detached: true, stdio: ['ignore', log, log] });
        closeSync(log);
        started.push(lb);
        lb.once('error', () => undefined); // reported below: nothing listens on the front door
        await waitForPort(front.host, front.port + i, 10_000);
      }
    }
  } catch (err) {
    console.error(`tandem up: ${(err as Error).message}`);
    await stopAll(EXIT.FAILED);
    return;
  }

  const frontDoor = useHaproxy ? opts.listen : members[0].smtp;
  const siteDoors = siteNames.map((site, i) => ({ site, smtp: useHaproxy ? frontOf(i) : members.find((m) => m.site === site)!.smtp }));
  console.log(JSON.stringify({
    event: 'up', smtp: frontDoor, haproxy: useHaproxy, config: configFile,
    ...(multiSite ? { sites: siteDoors, witness: etcd.map((e) => ({ name: e.name, url: e.url, pid: e.proc.pid })) } : {}),
    nodes: members.map((m) => ({ id: m.id, site: m.site, smtp: m.smtp, admin: m.admin, pid: m.proc!.pid })),
  }));
  const tandem = TANDEM_BIN;
  process.stderr.write([
    '',
    `Tandem local cluster: ${n} nodes${useHaproxy ? ' behind HAProxy' : opts.haproxy ? ' (HAProxy not installed: connect to the nodes directly)' : ''}`,
    `  front door (SMTP):  ${frontDoor}`,
    ...(multiSite ? siteDoors.map((d) => `  site ${d.site} front door: ${d.smtp}`) : []),
    ...members.map((m) => `  node ${m.id}${multiSite ? ` (${m.site}, partner ${m.partner})` : ''}: SMTP ${m.smtp}  admin http://${m.admin}/health  pid ${m.proc!.pid} (crash it: kill -9 -${m.proc!.pid})`),
    ...(multiSite ? [
      `  storage:  replicated, each message at its partner and in the next site before its 250`,
      etcd.length ? `  witness:  etcd ${etcd.map((e) => `${e.name} ${e.url}`).join(', ')}` : '  witness:  none (etcd not installed): a lost site\'s queues are taken over by `tandem cluster takeover --site dc1`',
      `  directory: the demo's tables (a directory master per site: docs/sites.md)`,
      `  lose site dc1: kill -9 ${[...members.filter((m) => m.site === 'dc1').map((m) => `-${m.proc!.pid}`), ...etcd.filter((e) => e.name === 'dc1').map((e) => `-${e.proc.pid}`)].join(' ')}`,
    ] : []),
    `  send:     swaks --server ${frontDoor} --from you@example.org --to team@example.test`,
    `  mail:     ls ${path.join(dir, 'mail')}/alice/new`,
    `  status:   ${tandem} cluster status --config ${configFile}`,
    `  console:  http://${members[0].admin}/console  (user admin, password ${consoleToken}; every node's admin address serves it)`,
    `  track:    ${tandem} track --to alice@example.test --since 1h --config ${configFile}`,
    `  logs:     ${path.join(dir, 'log')}/`,
    '  stop:     Ctrl-C',
    '',
  ].join('\n'));
  for (const m of members) {
    m.proc!.once('exit', (code, signal) => {
      if (!stopping) process.stderr.write(`node ${m.id} exited (${signal ?? `code ${code}`}); its spool is taken over by a peer after cluster.dead_after. Start it again with:\n  ${tandem} ${startCommand(m).slice(1).join(' ')}\n`);
    });
  }
}
