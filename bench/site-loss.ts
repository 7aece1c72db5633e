/*
 * site-loss.ts - benchmark two sites (a, b in dc1; c, d in dc2; partners a↔b, c↔d; replicated
 * storage; real node processes on loopback): what a second copy in the other site costs, and
 * how long a lost site's backlog takes to come out of the other site.
 *
 *   node --import tsx bench/site-loss.ts [--messages M=3000] [--connections C=20] [--size S=4096]
 *        [--rounds R=2] [--queued K=2000] [--runs N=2] [--keep]
 *
 * Relay rate, R rounds alternating (this VM's speed drifts; medians compared): a fresh 4-node
 * cluster with remote_copy off (each message at its partner only) and one with it on (at the
 * partner and in the other site), M messages of S bytes over C connections spread over a and b,
 * to a sink that is up: accepted/s (until the last 250) and delivered/s (until the sink has all).
 * Site loss, N runs, remote_copy on, with a 3-member etcd witness (dc1, dc2, third) when etcd is
 * installed: K messages queued on dc1 (K/2 on a, K/2 on b, next hop down), then kill -9 of a's
 * and b's process groups and of dc1's etcd member (time 0) and a sink started on the next hop's
 * port; without etcd, `tandem cluster takeover --site dc1` is run at once (its time counts).
 *   first   0 → the sink's first record of the K;  drained  0 → the sink has all K
 *   lost / duplicates   accepted messages missing at the sink / records beyond the first
 * The inter-site link is loopback: this kernel has no netem, so no delay is added between the
 * sites (a real one adds its round trip to every 250 with remote_copy on).
 * Prints human lines, then one JSON line {"bench":"site-loss",...}. Exit code 1 when a message
 * accepted with 250 never reached the sink.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCluster, type TestCluster } from "../test/harness/cluster.ts";
import { runLoad } from "../test/harness/load.ts";
import { freePort } from "../test/harness/ports.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { startSink, type Sink } from "../test/harness/sink.ts";
import { runCli } from "../test/harness/tandem.ts";
import { ETCD_AVAILABLE, startEtcdCluster, type EtcdCluster } from "../test/harness/etcd.ts";
import { machineInfo } from "./procstat.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "3000" },
    connections: { type: "string", default: "20" },
    size: { type: "string", default: "4096" },
    rounds: { type: "string", default: "2" },
    queued: { type: "string", default: "2000" },
    runs: { type: "string", default: "2" },
    keep: { type: "boolean", default: false },
  },
  strict: true,
});
const P = { messages: Number(values.messages), connections: Number(values.connections), size: Number(values.size), rounds: Number(values.rounds), queued: Number(values.queued), runs: Number(values.runs) };
for (const [k, v] of Object.entries(P)) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} wants a positive integer, got ${v}`);
const IDS = ["a", "b", "c", "d"];
const FROM = "bench@example.org";
const TO = (i: number): string => `rcpt${i % 100}@example.net`;
const procs = trackProcesses();

const log = (text: string): void => void process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);

async function fourNodes(dir: string, relayHost: string, remoteCopy: boolean, witness?: EtcdCluster): Promise<TestCluster> {
  const cluster = await createCluster({
    dir, relayHost, ids: IDS, sites: ["dc1", "dc1", "dc2", "dc2"],
    replicated: { replication: { remote_copy: remoteCopy } },
    ...(witness ? { cluster: { witness: { etcd: { endpoints: witness.endpoints } } } } : {}),
    extra: { queue: { min_backoff: "1s", max_backoff: "1s" } },
  });
  await Promise.all(IDS.map((id) => cluster.start(id)));
  await cluster.waitFor("every node delivering its own spool, its holders connected, no secondary", async () => {
    for (const id of IDS) {
      const s = await cluster.status(id);
      if (s.ownSpool !== "delivering" || s.secondaries.length > 0 || s.replication.connection !== "up") return false;
      if (s.peers.some((p: { status: { type: string } }) => p.status.type !== "alive")) return false;
    }
    return true;
  }, 90_000);
  return cluster;
}

async function relayRound(root: string, tag: string, remoteCopy: boolean): Promise<{ acceptedPerSec: number; deliveredPerSec: number }> {
  const sink = await startSink();
  const cluster = await fourNodes(join(root, tag), sink.address, remoteCopy);
  try {
    const t0 = Date.now();
    const half = Math.ceil(P.connections / 2);
    const loads = await Promise.all(["a", "b"].map((id, i) => {
      const at = cluster.addresses.get(id)!.smtp;
      return runLoad({ host: at.host, port: at.port, total: P.messages / 2, concurrency: half, sizeBytes: P.size, from: FROM, to: TO, runId: `${tag}${i}` });
    }));
    const acceptedMs = Date.now() - t0;
    const accepted = loads.reduce((n, l) => n + l.accepted.size, 0);
    await sink.waitForCount(accepted, 300_000);
    const deliveredMs = Date.now() - t0;
    return { acceptedPerSec: Math.round(accepted / (acceptedMs / 1000)), deliveredPerSec: Math.round(accepted / (deliveredMs / 1000)) };
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
}

interface LossRun { firstMs: number; drainedMs: number; queued: number; lost: number; duplicates: number; how: string }

async function siteLoss(root: string, n: number): Promise<LossRun> {
  const hopPort = await freePort();
  const witness = ETCD_AVAILABLE ? await startEtcdCluster() : undefined;
  const cluster = await fourNodes(join(root, `loss-${n}`), `127.0.0.1:${hopPort}`, true, witness);
  let sink: Sink | undefined;
  try {
    const accepted = new Set<string>();
    for (const id of ["a", "b"]) {
      const at = cluster.addresses.get(id)!.smtp;
      const load = await runLoad({ host: at.host, port: at.port, total: P.queued / 2, concurrency: 10, sizeBytes: P.size, from: FROM, to: TO, runId: `l${n}${id}` });
      for (const x of load.accepted) accepted.add(x);
    }
    await cluster.waitFor("dc2 holding a copy of every dc1 message", async () => {
      const [c, d] = await Promise.all([cluster.status("c"), cluster.status("d")]);
      return (c.replication.holding.a ?? 0) + (d.replication.holding.b ?? 0) >= accepted.size;
    }, 60_000);
    log(`site loss ${n}: ${accepted.size} messages queued in dc1 (next hop down); kill -9 of dc1 (a, b${witness ? ", etcd member e0" : ""})`);
    const t0 = Date.now();
    await Promise.all([cluster.kill("a"), cluster.kill("b"), witness?.members[0].kill()]);
    sink = await startSink({ listen: `127.0.0.1:${hopPort}`, out: join(root, `loss-${n}`, "sink.jsonl") });
    let how = "witness";
    if (!witness) {
      how = "tandem cluster takeover --site dc1";
      await cluster.waitFor("c and d seeing dc1 dead", async () => {
        const c = await cluster.status("c");
        return ["a", "b"].every((id) => c.peers.find((p: { id: string }) => p.id === id)?.status.type === "dead");
      }, 30_000);
      const r = await runCli(["cluster", "takeover", "--site", "dc1", "--config", cluster.config], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`takeover --site dc1 failed: ${r.stderr}`);
    }
    await sink.waitForCount(accepted.size, 300_000);
    const ts = sink.readRecords().map((r) => r.t);
    const counts = sink.countsByTestId();
    return {
      firstMs: Math.min(...ts) - t0, drainedMs: Math.max(...ts) - t0, queued: accepted.size, how,
      lost: [...accepted].filter((id) => !counts.has(id)).length,
      duplicates: [...counts.values()].reduce((s, c) => s + c - 1, 0),
    };
  } finally {
    await cluster.stopAll();
    await sink?.stop();
    await witness?.stopAll();
  }
}

const root = mkdtempSync(join(tmpdir(), "tandem-bench-sites-"));
try {
  const rates: Record<"local" | "remote", Array<{ acceptedPerSec: number; deliveredPerSec: number }>> = { local: [], remote: [] };
  for (let r = 0; r < P.rounds; r++) {
    for (const mode of r % 2 ? (["remote", "local"] as const) : (["local", "remote"] as const)) {
      const got = await relayRound(root, `${mode}${r}`, mode === "remote");
      rates[mode].push(got);
      log(`round ${r + 1}, ${mode === "remote" ? "partner + other site" : "partner only"}: ${got.acceptedPerSec} accepted/s, ${got.deliveredPerSec} delivered/s`);
    }
  }
  const losses: LossRun[] = [];
  for (let n = 0; n < P.runs; n++) {
    const run = await siteLoss(root, n);
    losses.push(run);
    log(`site loss ${n}: first redelivery ${run.firstMs} ms, ${run.queued} drained at ${run.drainedMs} ms (${run.how}); lost ${run.lost}, duplicates ${run.duplicates}`);
  }
  const summary = {
    bench: "site-loss", machine: machineInfo(), params: P, interSiteDelay: "none (no netem in this kernel)",
    relay: {
      partnerOnly: { acceptedPerSec: median(rates.local.map((x) => x.acceptedPerSec)), deliveredPerSec: median(rates.local.map((x) => x.deliveredPerSec)) },
      partnerAndRemote: { acceptedPerSec: median(rates.remote.map((x) => x.acceptedPerSec)), deliveredPerSec: median(rates.remote.map((x) => x.deliveredPerSec)) },
    },
    siteLoss: { firstMs: median(losses.map((x) => x.firstMs)), drainedMs: median(losses.map((x) => x.drainedMs)), lost: losses.reduce((s, x) => s + x.lost, 0), duplicates: losses.reduce((s, x) => s + x.duplicates, 0), how: losses[0]?.how, runs: losses },
  };
  const ratio = summary.relay.partnerAndRemote.acceptedPerSec / summary.relay.partnerOnly.acceptedPerSec;
  console.log(`relay (median of ${P.rounds}): partner only ${summary.relay.partnerOnly.acceptedPerSec} accepted/s, ${summary.relay.partnerOnly.deliveredPerSec} delivered/s; partner + other site ${summary.relay.partnerAndRemote.acceptedPerSec} accepted/s (${ratio.toFixed(2)}×), ${summary.relay.partnerAndRemote.deliveredPerSec} delivered/s`);
  console.log(`site loss (median of ${P.runs}, ${summary.siteLoss.how}): first redelivery ${summary.siteLoss.firstMs} ms after the kill, ${P.queued} drained at ${summary.siteLoss.drainedMs} ms; lost ${summary.siteLoss.lost}, duplicates ${summary.siteLoss.duplicates}`);
  console.log(JSON.stringify(summary));
  process.exitCode = summary.siteLoss.lost > 0 ? 1 : 0;
} finally {
  await procs.stopAll();
  if (!values.keep) rmSync(root, { recursive: true, force: true });
}
