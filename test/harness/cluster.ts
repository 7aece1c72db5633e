/*
 * cluster.ts - a Tandem cluster of real node processes on one machine, for process-level tests
 * and benchmarks: one shared config file (cluster.yaml), one shared spool root, fixed loopback
 * ports per node (SMTP, admin, UDP heartbeat) chosen free at set-up, so that a node restarted
 * after a kill comes back on the same addresses (as behind a load balancer).
 *
 * Exports:
 *   createCluster(opts): Promise<TestCluster>
 *   TestCluster  dir, config (path), ids, addresses, start(id), kill(id) (SIGKILL to the node's
 *                whole process group: its secondaries die with it, as in a machine crash),
 *                node(id), status(id) (GET /cluster), waitFor(id, what, pred), trackingEvents()
 *   clusterNodeIds(n)  ["a", "b", ...]
 * status() sends the admin token when `extra.admin.token` sets one.
 * `placement` puts each node on its own address in a network namespace (sites.ts).
 * What can go wrong: a node that does not start (the error carries its output; each node's log
 * is also in <dir>/<id>.out); status() of a dead node rejects.
 */
import { readFileSync, existsSync, mkdirSync } from "node:fs";
import { makeClusterCerts } from "./cluster-certs.ts";
import { join } from "node:path";
import { freePort, freeUdpPort, type HostPort } from "./ports.ts";
import { startNode, writeNodeConfig, defaultNodeConfig, type RunningNode, type ConfigTree } from "./node.ts";
import { eventually } from "./wait.ts";

export interface ClusterOptions {
  dir: string;
  /** Node ids (default a, b). Partners: each node's partner is the next one (a→b, b→a for two). */
  ids?: string[];
  /** Each node's site, in the order of `ids` (default all "test"); partners are then the next node of the same site. */
  sites?: string[];
  /** Where the nodes relay all mail (a sink). */
  relayHost: string;
  /** cluster: keys to set (timings), merged over the defaults below. */
  cluster?: ConfigTree;
  /** Other config sections merged over the defaults. */
  extra?: ConfigTree;
  /**
   * cluster.storage: replicated — certificates made with openssl (cluster-certs.ts), a free
   * replication port per node, and each node's spool on its own "disk" (<dir>/disk-<id>),
   * with no folder shared. `replication`: keys merged over cluster.replication.
   */
  replicated?: { replication?: ConfigTree };
  /**
   * Where each node runs (default: 127.0.0.1, the host's network): its own address (SMTP, admin,
   * heartbeat and replication all bind it) and a network namespace to run in
   * (test/harness/sites.ts builds such a network).
   */
  placement?: (id: string) => { host: string; netns?: string };
}

export interface NodeAddresses {
  smtp: HostPort;
  admin: HostPort;
  heartbeat: HostPort;
  /** Replicated clusters: the node's shadow-holder (replication) port. */
  replication?: HostPort;
}

export interface TestCluster {
  dir: string;
  config: string;
  ids: string[];
  addresses: Map<string, NodeAddresses>;
  secret: string;
  /**
   * `spool`: this node's view of the spool root (default the shared one in the config).
   * `config`: keys merged over the shared config for this node only (a misconfigured node:
   * another secret, another node list…), written to <dir>/<id>-own/tandem.yaml.
   * `env`: extra environment (e.g. libfaketime's, for a node whose clock is off).
   */
  start(id: string, opts?: { spool?: string; config?: ConfigTree; env?: NodeJS.ProcessEnv; nodeId?: string }): Promise<RunningNode>;
  kill(id: string): Promise<void>;
  node(id: string): RunningNode | undefined;
  status(id: string): Promise<any>;
  waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs?: number): Promise<T>;
  trackingEvents(): Array<Record<string, any>>;
  /** Replicated clusters: node `id`'s own spool folder (on its own disk). */
  spoolOf(id: string): string;
  /**
   * Wait until node `by` took `spool` over at or after `since` (Date.now() of the failure):
   * its takeover event is in the tracking log and its secondary shows in its status, which is
   * returned. (A takeover from before — of a node slow to start — does not count.)
   */
  waitForTakeover(by: string, spool: string, since: number, timeoutMs?: number): Promise<any>;
  stopAll(): Promise<void>;
}

export const clusterNodeIds = (n: number) => Array.from({ length: n }, (_, i) => String.fromCharCode(97 + i));

export async function createCluster(opts: ClusterOptions): Promise<TestCluster> {
  const ids = opts.ids ?? ["a", "b"];
  const certDir = join(opts.dir, "certs");
  if (opts.replicated) {
    mkdirSync(certDir, { recursive: true });
    makeClusterCerts(certDir, ids);
  }
  // ports after the (slow) openssl calls: the less time between choosing a free port and the
  // node binding it, the less chance another test takes it meanwhile
  const addresses = new Map<string, NodeAddresses>();
  const placement = (id: string) => opts.placement?.(id) ?? { host: "127.0.0.1" };
  for (const id of ids) {
    // (the ports are probed on the host; in a namespace of its own only this node binds its address)
    const host = placement(id).host;
    addresses.set(id, {
      smtp: { host, port: await freePort() },
      admin: { host, port: await freePort() },
      heartbeat: { host, port: await freeUdpPort() },
      ...(opts.replicated ? { replication: { host, port: await freePort() } } : {}),
    });
  }
  /** Replicated: each node's own disk (its spool root, and the copies it keeps for others). */
  const diskOf = (id: string) => join(opts.dir, `disk-${id}`);
  const fmt = (a: HostPort) => `${a.host}:${a.port}`;
  const secret = "test-cluster-secret-0123456789abcdef";
  /** The next node (of the same site, with sites), wrapping round. */
  const partnerOf = (i: number) => {
    const mates = ids.filter((_, j) => (opts.sites?.[j] ?? "test") === (opts.sites?.[i] ?? "test"));
    return mates[(mates.indexOf(ids[i]) + 1) % mates.length];
  };
  const tracking = join(opts.dir, "tracking.log");
  const base = defaultNodeConfig(opts.dir);
  const config = writeNodeConfig(opts.dir, {
    node: { id: ids[0], hostname: "cluster.test" },
    relay: { host: opts.relayHost, networks: ["127.0.0.0/8"] },
    tracking: { path: tracking },
    cluster: {
      secret,
      nodes: ids.map((id, i) => ({
        id,
        heartbeat: fmt(addresses.get(id)!.heartbeat),
        smtp: fmt(addresses.get(id)!.smtp),
        admin: fmt(addresses.get(id)!.admin),
        site: opts.sites?.[i] ?? "test",
        partner: partnerOf(i),
        ...(opts.replicated ? { replication: fmt(addresses.get(id)!.replication!) } : {}),
      })),
      ...(opts.replicated ? {
        storage: "replicated",
        replication: {
          tls: { ca: join(certDir, "cluster-ca.pem"), cert: join(certDir, "node-{node}.pem"), key: join(certDir, "node-{node}.key") },
          ...(opts.replicated.replication ?? {}),
        },
      } : {}),
      ...(opts.cluster ?? {}),
    },
    ...(opts.extra ?? {}),
  }, base);
  const running = new Map<string, RunningNode>();

  const cluster: TestCluster = {
    dir: opts.dir,
    config,
    ids,
    addresses,
    secret,
    async start(id, startOpts = {}) {
      const a = addresses.get(id)!;
      const own = startOpts.config ? writeNodeConfig(join(opts.dir, `${id}-own`), startOpts.config, readFileSync(config, "utf8")) : config;
      const node = await startNode({
        config: own, nodeId: startOpts.nodeId ?? id, listen: fmt(a.smtp), admin: fmt(a.admin), logFile: join(opts.dir, `${id}.out`),
        ...(startOpts.spool ? { spool: startOpts.spool } : opts.replicated ? { spool: join(diskOf(id), "spool") } : {}),
        ...(startOpts.env ? { env: { ...process.env, ...startOpts.env } } : {}),
        netns: placement(id).netns,
      });
      running.set(id, node);
      return node;
    },
    async kill(id) {
      const node = running.get(id);
      running.delete(id);
      await node?.proc.killHard();
    },
    node: (id) => running.get(id),
    spoolOf: (id) => (opts.replicated ? join(diskOf(id), "spool", id) : join(opts.dir, "spool", id)),
    async status(id) {
      const a = addresses.get(id)!;
      const token = (opts.extra?.admin as { token?: string } | undefined)?.token;
      const res = await fetch(`http://${fmt(a.admin)}/cluster`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
      if (!res.ok) throw new Error(`GET /cluster on ${id}: HTTP ${res.status}`);
      return res.json();
    },
    waitFor: (what, fn, timeoutMs = 30_000) => eventually(what, fn, timeoutMs, 50),
    trackingEvents() {
      if (!existsSync(tracking)) return [];
      return readFileSync(tracking, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    },
    waitForTakeover(by, spool, since, timeoutMs = 30_000) {
      return eventually(`${by} to take ${spool}'s spool over`, async () => {
        const took = cluster.trackingEvents().some((e) => e.event === 'takeover' && e.node === by && e.spool === spool && Date.parse(e.t) >= since - 5);
        if (!took) return false;
        const s = await cluster.status(by);
        return s.secondaries.some((x: any) => x.spool === spool) && s;
      }, timeoutMs, 50);
    },
    async stopAll() {
      await Promise.all([...running.values()].map((n) => n.stop().catch(() => undefined)));
      running.clear();
    },
  };
  return cluster;
}
