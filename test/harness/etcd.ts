/**
 * test/harness/etcd.ts — a real 3-member etcd cluster (Debian's etcd-server, etcd 3.4) on
 * loopback for process-level tests of the etcd witness (recipe shared/recipes/07).
 *
 * Exports:
 *   startEtcdCluster(opts?): Promise<EtcdCluster>  three members, healthy on return
 *       (opts.placement: each member's address and network namespace, for sites.ts)
 *   EtcdCluster   members, endpoints (http://127.0.0.1:PORT for each member), dir, stopAll()
 *   EtcdMember    name, clientUrl, proc, running, kill() (SIGKILL), start() (same data: rejoins)
 *   ETCD_AVAILABLE  whether /usr/bin/etcd exists (tests skip with a message otherwise)
 *
 * Each member: its own temp data folder, a client and a peer port from freePort(), fast raft
 * timings (--heartbeat-interval 50 --election-timeout 500: a leader in well under a second, a
 * lost quorum seen within ~0.5 s), JSON logs (--logger zap) kept in DIR/NAME.log, its own process
 * group (procs.ts). Ready = the member logged that it serves client traffic, which etcd does
 * only once the cluster has a quorum, so the three are started together and awaited together.
 * Members are always stopped with SIGKILL: a member whose peers are gone may ignore SIGTERM.
 * ETCD_* and ETCDCTL_* variables are removed from the members' environment (etcd reads them as
 * flags).
 * What can go wrong: etcd not installed (ETCD_AVAILABLE false); a port taken between freePort()
 * and etcd's bind (the member exits, the error carries its output).
 * Config keys: none (these are etcd's own flags).
 */
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.ts';
import { spawnProcess, type Proc } from './procs.ts';

const ETCD = '/usr/bin/etcd';

export const ETCD_AVAILABLE = existsSync(ETCD);

/** etcd 3.4's line once it serves clients ("serving client traffic insecurely…"; newer: "ready to serve…"). */
const SERVING = /^(serving client traffic|ready to serve client requests)/;

/** How long a member may take to say it serves clients (it needs a quorum first). */
const READY_TIMEOUT_MS = 20_000;

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly proc: Proc | undefined;
  /** Its process is running (started and not seen to exit). */
  readonly running: boolean;
  /** SIGKILL the member's process group; its data stays for start(). */
  kill(): Promise<void>;
  /** Start it again with the same ports and data; resolves once it serves clients. */
  start(): Promise<void>;
}

export interface EtcdCluster {
  readonly members: EtcdMember[];
  /** Client URLs of all members, for the witness's `endpoints`. */
  readonly endpoints: string[];
  readonly dir: string;
  /** SIGKILL every member still running. */
  stopAll(): Promise<void>;
}

export interface EtcdOptions {
  /**
   * Where each of the three members runs (default 127.0.0.1 in the host's network): its address,
   * and a network namespace to run in (test/harness/sites.ts).
   */
  placement?: Array<{ host: string; netns?: string }>;
}

/** Starts three members on free ports and waits until each serves clients. */
export async function startEtcdCluster(opts: EtcdOptions = {}): Promise<EtcdCluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-etcd-'));
  const ports: number[] = [];
  for (let i = 0; i < 6; i++) ports.push(await freePort());
  const specs = [0, 1, 2].map((i) => ({ name: `e${i}`, clientPort: ports[2 * i], peerPort: ports[2 * i + 1], host: opts.placement?.[i].host ?? '127.0.0.1', netns: opts.placement?.[i].netns }));
  const initialCluster = specs.map((s) => `${s.name}=http://${s.host}:${s.peerPort}`).join(',');
  const token = `tandem-test-${process.pid}-${Date.now()}`;
  const members = specs.map((s) => new Member(s.name, s.host, s.clientPort, s.peerPort, dir, initialCluster, token, s.netns));
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    dir,
    stopAll: async () => { await Promise.all(members.map((m) => m.kill())); },
  };
  try {
    await Promise.all(members.map((m) => m.start()));
  } catch (err) {
    await cluster.stopAll();
    throw err;
  }
  return cluster;
}

/** The environment without ETCD_* / ETCDCTL_* variables (etcd would take them as flags). */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')));
}

class Member implements EtcdMember {
  readonly clientUrl: string;
  proc: Proc | undefined;

  constructor(
    readonly name: string,
    private readonly host: string,
    clientPort: number,
    private readonly peerPort: number,
    private readonly dir: string,
    private readonly initialCluster: string,
    private readonly token: string,
    private readonly netns: string | undefined,
  ) {
    this.clientUrl = `http://${host}:${clientPort}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitStatus === undefined;
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`etcd member ${this.name} is already running`);
    const peerUrl = `http://${this.host}:${this.peerPort}`;
    const proc = await spawnProcess(ETCD, [
      '--name', this.name,
      '--data-dir', path.join(this.dir, this.name),
      '--listen-client-urls', this.clientUrl, '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', this.initialCluster, '--initial-cluster-state', 'new',
      '--initial-cluster-token', this.token,
      '--heartbeat-interval', '50', '--election-timeout', '500',
      '--logger', 'zap', '--log-outputs', 'stderr',
    ], { name: `etcd-${this.name}`, env: cleanEnv(), logFile: path.join(this.dir, `${this.name}.log`), netns: this.netns });
    this.proc = proc;
    try {
      await proc.waitForLine((l) => typeof l.json?.msg === 'string' && SERVING.test(l.json.msg), READY_TIMEOUT_MS);
    } catch (err) {
      await proc.killHard();
      throw new Error(`etcd member ${this.name} did not become ready: ${(err as Error).message}`);
    }
  }

  async kill(): Promise<void> {
    await this.proc?.killHard();
  }
}
