/*
 * failover.ts - benchmark a Tandem pair (two real node processes over one shared spool root):
 * what a kill -9 of one node costs, and what the second node adds in throughput.
 *
 *   node --import tsx bench/failover.ts [--runs N=3] [--queued K=2000] [--messages M=10000]
 *        [--connections C=20] [--size S=4096] [--warmup W=1000] [--rounds R=2] [--keep]
 *        [--storage shared|replicated] [--timings default|fast] [--standby on|off]
 * --storage replicated: each node's spool in its own folder, copies over the replication port
 * (b's secondary then delivers a's queue from its copies).
 * --timings fast: the fast timing profile of docs/ha.md (heartbeat_interval 150 ms, fence_after
 * 600 ms, dead_after 1 s) instead of the defaults (250 ms, 1.5 s, 2.5 s).
 * --standby off: cluster.standby_secondary false (the secondary is forked at the takeover).
 * --rounds 0: the failover runs alone, no throughput part.
 *
 * Failover, N runs, each on a fresh cluster (test/harness/cluster.ts, default cluster timings):
 *   K messages are sent to node a while its next hop is down (a gate on the next hop's port that
 *   closes every connection at once; the sink behind it is already up), so all K stay queued in
 *   a's spool. Then a's process group gets SIGKILL (time 0) and the gate opens at once: from then
 *   on it passes connections through to the sink, so the deliveries measure the takeover, not a
 *   sink's start (a busy machine took up to 5 s to start one). queue.min_backoff = max_backoff = 1s: every
 *   deferred message in a's spool is due again before b can take it over, so the first delivery
 *   is not held back by a retry time (with the default backoffs it would wait for it; see docs).
 *   detection   0 → b's GET /cluster (polled every 20 ms) shows a "dead"
 *   takeover    0 → b's "takeover" log line / tracking event; 0 → its secondary's "ready" line
 *   first       0 → the sink's record of the first of the K (and the first tracking "delivered"
 *               written by b's secondary for spool a)
 *   drain       0 → the sink has all K; rate = K / (last - first record)
 * Throughput, one fresh cluster with a sink that is up: W warm-up messages, then R rounds of:
 * M messages of S bytes over C connections to a alone (b up and idle), then M over C/2
 * connections to each node (alternating, because this VM's speed drifts; medians are compared).
 *   accepted/s  M / time until the last 250;  delivered/s  M / time until the sink has all M
 *   CPU         per process group (a, b, sink) and this process (the load generator), the rest
 *               of the machine's busy time ("other processes": anything else running on the
 *               host), and its idle and iowait time, as % of one core, from /proc
 *               (bench/procstat.ts)
 * Prints human lines, then one JSON line {"bench":"failover",...}. Exit code 1 when a message
 * accepted with 250 never reached the sink, or a run did not complete.
 * Exports nothing (an entry point). What can go wrong: a node that does not start (its output is
 * in the error; logs in <tmp>/<run>/<id>.out with --keep); timeouts are reported as errors.
 * Temp folders are removed at the end unless --keep.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCluster, type TestCluster } from "../test/harness/cluster.ts";
import { runLoad, type LoadResult } from "../test/harness/load.ts";
import { trackProcesses, type ProcLine } from "../test/harness/procs.ts";
import { startSink, type Sink } from "../test/harness/sink.ts";
import { groupCpuSeconds, machineCpuSeconds, machineInfo } from "./procstat.ts";
import { DEFAULT_TIMINGS, FAST_TIMINGS, timingsConfig } from "./timings.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    queued: { type: "string", default: "2000" },
    messages: { type: "string", default: "10000" },
    connections: { type: "string", default: "20" },
    size: { type: "string", default: "4096" },
    warmup: { type: "string", default: "1000" },
    rounds: { type: "string", default: "2" },
    keep: { type: "boolean", default: false },
    storage: { type: "string", default: "shared" },
    timings: { type: "string", default: "default" },
    standby: { type: "string", default: "on" },
  },
  strict: true,
});
if (values.storage !== "shared" && values.storage !== "replicated") throw new Error(`--storage wants shared or replicated, got ${values.storage}`);
/** Replicated: each node's spool on its own disk, a's messages copied to b before their 250; b's secondary delivers the copies. */
const STORAGE = values.storage === "replicated" ? { replicated: {} } : {};
if (values.timings !== "default" && values.timings !== "fast") throw new Error(`--timings wants default or fast, got ${values.timings}`);
if (values.standby !== "on" && values.standby !== "off") throw new Error(`--standby wants on or off, got ${values.standby}`);
/** The cluster timings of the run (docs/ha.md "Timings and how to tune them"), in ms. */
const TIMINGS = values.timings === "fast" ? FAST_TIMINGS : DEFAULT_TIMINGS;
const CLUSTER = { ...timingsConfig(TIMINGS), standby_secondary: values.standby === "on" };
const P = { runs: Number(values.runs), queued: Number(values.queued), messages: Number(values.messages), connections: Number(values.connections), size: Number(values.size), warmup: Number(values.warmup), rounds: Number(values.rounds) };
for (const [k, v] of Object.entries(P)) {
  if (!Number.isInteger(v) || v < (k === "warmup" || k === "rounds" ? 0 : 1)) throw new Error(`--${k} wants a positive integer, got ${v}`);
}
const FROM = "bench@example.org";
const TO = (i: number): string => `rcpt${i % 100}@example.net`;
/** Issue 14: first redelivery within 3 s of the kill with the default timings, 1.5 s with the fast profile. */
const TARGET = values.timings === "fast" ? { detectionMs: 1250, firstDeliveryMs: 1500 } : { detectionMs: 3000, firstDeliveryMs: 3000 };

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}
const secs = (ms: number): string => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "n/a");
/** Time of a node log line: pino's own "time" when present, else when we read it. */
const lineTime = (l: ProcLine): number => (typeof l.json?.time === "string" ? Date.parse(l.json.time) : l.t);

/**
 * Both nodes alive, each delivering its own spool, no secondary running: a node that starts more
 * than dead_after after its peer is first taken for dead (its empty spool is claimed and handed
 * back when it shows up); measure only once that has settled.
 */
async function settled(cluster: TestCluster): Promise<void> {
  await cluster.waitFor("a and b alive, each delivering its own spool", async () => {
    for (const id of ["a", "b"]) {
      const s = await cluster.status(id);
      if (s.peers[0].status.type !== "alive" || s.ownSpool !== "delivering" || s.secondaries.length > 0) return false;
      if (s.replication && s.replication.connection !== "up") return false; // replicated: copies made from the first message
    }
    return true;
  }, 60_000);
}

interface FailoverRun {
  detectionMs: number;
  takeoverLogMs: number;
  takeoverTrackingMs: number;
  secondaryReadyMs: number;
  /** b's secondary was its pre-forked standby (1) or forked at the takeover (0). */
  fromStandby: number;
  firstDeliveryMs: number;
  firstTrackedDeliveryMs: number;
  drainMs: number;
  drainPerSec: number;
  queued: number;
  lost: number;
  duplicates: number;
  deliveredByB: number;
}

/**
 * The next hop's port: while shut, every connection is closed at once (the hop is down for the
 * sender); once opened, connections are passed through to `target` byte for byte.
 */
async function gate(target: { host: string; port: number }): Promise<{ port: number; open(): void; close(): Promise<void> }> {
  let open = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    if (!open) return void socket.destroy();
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    const upstream = createConnection(target);
    socket.pipe(upstream).pipe(socket);
    const end = () => { socket.destroy(); upstream.destroy(); };
    socket.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return { port, open: () => { open = true; }, close: () => new Promise((resolve) => { server.close(() => resolve()); for (const s of sockets) s.destroy(); }) };
}

/** One failover run on a fresh cluster (see header). */
async function failoverRun(root: string, n: number): Promise<FailoverRun> {
  const dir = join(root, `failover-${n}`);
  mkdirSync(dir, { recursive: true });
  const sink: Sink = await startSink({ out: join(dir, "sink.jsonl") });
  const hop = await gate(sink);
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${hop.port}`, ...STORAGE, cluster: CLUSTER, extra: { queue: { min_backoff: "1s", max_backoff: "1s" } } });
  try {
    await cluster.start("a");
    const b = await cluster.start("b");
    await settled(cluster);
    const smtpA = cluster.addresses.get("a")!.smtp;
    const runId = `q${n}x${process.pid}`;
    const load = await runLoad({ host: smtpA.host, port: smtpA.port, total: P.queued, concurrency: 10, sizeBytes: P.size, from: FROM, to: TO, runId });
    if (load.accepted.size !== P.queued) throw new Error(`run ${n}: a accepted ${load.accepted.size} of ${P.queued} (errors ${JSON.stringify(load.errors)})`);
    const takeoverLine = b.proc.waitForLine((l) => l.json?.event === "takeover" && l.json.spool === "a", 60_000, { includePast: false });
    const readyLine = b.proc.waitForLine((l) => l.json?.event === "secondary-ready" && l.json.secondary === "a", 60_000, { includePast: false });

    if (values.storage === "replicated") {
      // every message on two disks (none accepted with one copy) before the kill
      await cluster.waitFor("a's messages all copied to b", async () => (await cluster.status("a")).replication.unprotected === 0, 30_000);
    }
        log(`run ${n}: ${P.queued} messages queued on a (next hop down); kill -9 of a's process group`);
    const t0 = Date.now();
    await cluster.kill("a");
    hop.open();
    let detectionMs = NaN;
    while (Date.now() - t0 < 30_000) {
      const peer = (await cluster.status("b")).peers.find((p: { id: string }) => p.id === "a");
      if (peer?.status.type === "dead") {
        detectionMs = Date.now() - t0;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const takeoverLogMs = lineTime(await takeoverLine) - t0;
    const ready = await readyLine;
    const secondaryReadyMs = lineTime(ready) - t0;
    await sink.waitForCount(P.queued, 120_000);
    const records = sink.readRecords().filter((r) => r.testId?.startsWith(`${runId}-`));
    const ts = records.map((r) => r.t);
    const first = Math.min(...ts);
    const last = Math.max(...ts);
    const counts = sink.countsByTestId();
    // the sink records before its 250; the secondary writes "delivered" after it: let them land
    const deliveredByB = () => cluster.trackingEvents().filter((e) => e.event === "delivered" && e.node === "b" && e.secondary === "a");
    await cluster.waitFor("b's secondary to record its deliveries", async () => deliveredByB().length >= P.queued, 30_000).catch(() => undefined);
    const events = cluster.trackingEvents();
    const takeover = events.find((e) => e.event === "takeover" && e.spool === "a");
    const byB = deliveredByB();
    return {
      detectionMs,
      takeoverLogMs,
      takeoverTrackingMs: takeover ? Date.parse(takeover.t) - t0 : NaN,
      secondaryReadyMs,
      fromStandby: ready.json?.standby === true ? 1 : 0,
      firstDeliveryMs: first - t0,
      firstTrackedDeliveryMs: byB.length ? Math.min(...byB.map((e) => Date.parse(e.t))) - t0 : NaN,
      drainMs: last - t0,
      drainPerSec: Math.round(P.queued / Math.max(0.001, (last - first) / 1000)),
      queued: P.queued,
      lost: [...load.accepted].filter((id) => !counts.has(id)).length,
      duplicates: [...counts].filter(([id]) => id.startsWith(`${runId}-`)).reduce((s, [, c]) => s + c - 1, 0),
      deliveredByB: byB.length,
    };
  } finally {
    await cluster.stopAll();
    await hop.close();
    await sink.stop();
  }
}

interface Throughput {
  mode: "one node" | "pair";
  accepted: number;
  delivered: number;
  acceptedPerSec: number;
  deliveredPerSec: number;
  acceptSeconds: number;
  deliverSeconds: number;
  /** CPU seconds during the run, and as % of one core over the run's wall time. */
  cpu: Record<CpuKey | "others", { seconds: number; pctOfCore: number }>;
  errors: Record<string, number>;
}

type CpuKey = "a" | "b" | "sink" | "load" | "busy" | "idle" | "iowait";

/** CPU seconds so far of the nodes, the sink, this process (the load generator), the machine. */
function cpuNow(cluster: TestCluster, sink: Sink): Record<CpuKey, number> {
  const u = process.cpuUsage();
  const m = machineCpuSeconds();
  return {
    busy: m.busy,
    idle: m.idle,
    iowait: m.iowait,
    a: groupCpuSeconds(cluster.node("a")!.proc.pid),
    b: groupCpuSeconds(cluster.node("b")!.proc.pid),
    sink: groupCpuSeconds(sink.proc.pid),
    load: (u.user + u.system) / 1e6,
  };
}

/** M messages to a alone, or split over both nodes; timed until the sink has them all. */
async function throughputRun(cluster: TestCluster, sink: Sink, mode: Throughput["mode"], runId: string): Promise<Throughput> {
  const targets = mode === "pair" ? ["a", "b"] : ["a"];
  const base = sink.count();
  const cpu0 = cpuNow(cluster, sink);
  const t0 = performance.now();
  const loads: LoadResult[] = await Promise.all(targets.map((id, k) => {
    const smtp = cluster.addresses.get(id)!.smtp;
    const share = Math.floor(P.messages / targets.length) + (k === 0 ? P.messages % targets.length : 0);
    const conns = Math.max(1, Math.floor(P.connections / targets.length));
    return runLoad({ host: smtp.host, port: smtp.port, total: share, concurrency: conns, sizeBytes: P.size, from: FROM, to: TO, runId: `${runId}${id}` });
  }));
  const acceptMs = performance.now() - t0;
  const accepted = loads.reduce((s, l) => s + l.accepted.size, 0);
  await sink.waitForCount(base + accepted, 120_000 + P.messages * 20);
  const deliverMs = performance.now() - t0;
  const cpu1 = cpuNow(cluster, sink);
  const delta = (k: CpuKey) => cpu1[k] - cpu0[k];
  const ours = delta("a") + delta("b") + delta("sink") + delta("load");
  const cpu = Object.fromEntries([...(Object.keys(cpu0) as CpuKey[]), "others" as const].map((k) => {
    const s = k === "others" ? Math.max(0, delta("busy") - ours) : delta(k);
    return [k, { seconds: Math.round(s * 100) / 100, pctOfCore: Math.round((s / (deliverMs / 1000)) * 100) }];
  })) as Throughput["cpu"];
  const errors: Record<string, number> = {};
  for (const l of loads) for (const [k, v] of Object.entries(l.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    mode, accepted, delivered: sink.count() - base,
    acceptedPerSec: Math.round(accepted / (acceptMs / 1000)),
    deliveredPerSec: Math.round(accepted / (deliverMs / 1000)),
    acceptSeconds: Math.round(acceptMs / 10) / 100,
    deliverSeconds: Math.round(deliverMs / 10) / 100,
    cpu, errors,
  };
}

async function throughput(root: string): Promise<Throughput[]> {
  const dir = join(root, "throughput");
  const sink = await startSink({ out: join(root, "throughput-sink.jsonl") });
  const cluster = await createCluster({ dir, relayHost: sink.address, ...STORAGE, cluster: CLUSTER });
  try {
    await cluster.start("a");
    await cluster.start("b");
    await settled(cluster);
    if (P.warmup > 0) {
      log(`throughput: warm-up, ${P.warmup} messages over both nodes`);
      const w = { total: Math.ceil(P.warmup / 2), concurrency: Math.max(1, P.connections / 2), sizeBytes: P.size, from: FROM, to: TO };
      const base = sink.count();
      const ws = await Promise.all(["a", "b"].map((id) => runLoad({ ...w, ...cluster.addresses.get(id)!.smtp, runId: `w${id}` })));
      await sink.waitForCount(base + ws.reduce((s, l) => s + l.accepted.size, 0), 120_000);
    }
    const rows: Throughput[] = [];
    for (let round = 1; round <= P.rounds; round++) {
      for (const mode of ["one node", "pair"] as const) {
        log(`throughput: round ${round}, ${P.messages} x ${P.size} bytes over ${P.connections} connections, ${mode}`);
        rows.push(await throughputRun(cluster, sink, mode, `${mode === "pair" ? "tp" : "t1"}r${round}`));
      }
    }
    return rows;
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const describe = `${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`;
  log(`machine: ${describe}`);
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-failover-"));
  const runs: FailoverRun[] = [];
  let rows: Throughput[] = [];
  try {
    for (let n = 1; n <= P.runs; n++) runs.push(await failoverRun(root, n));
    if (P.rounds > 0) rows = await throughput(root);
  } finally {
    await procs.stopAll();
    if (values.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }

  const t = TIMINGS;
  console.log(`\nfailover benchmark (${values.storage} storage): ${values.timings} cluster timings (heartbeat ${t.heartbeat_interval} ms, fence_after ${t.fence_after / 1000} s, dead_after ${t.dead_after / 1000} s), standby secondary ${values.standby}; machine: ${describe}`);
  console.log(`\nkill -9 of a with ${P.queued} messages of ${P.size} bytes queued in its spool; times from the kill:`);
  const cols: Array<[string, (r: FailoverRun) => string]> = [
    ["detected dead", (r) => secs(r.detectionMs)],
    ["takeover (log/tracking)", (r) => `${secs(r.takeoverLogMs)} / ${secs(r.takeoverTrackingMs)}`],
    ["secondary ready", (r) => secs(r.secondaryReadyMs)],
    ["standby", (r) => (r.fromStandby === 1 ? "yes" : r.fromStandby === 0 ? "no" : String(r.fromStandby))],
    ["first delivery (sink/tracking)", (r) => `${secs(r.firstDeliveryMs)} / ${secs(r.firstTrackedDeliveryMs)}`],
    ["all delivered", (r) => secs(r.drainMs)],
    ["drain msg/s", (r) => String(r.drainPerSec)],
    ["by b's secondary", (r) => String(r.deliveredByB)],
    ["lost/dup", (r) => `${r.lost}/${r.duplicates}`],
  ];
  const med: FailoverRun = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, median(runs.map((r) => r[k as keyof FailoverRun]))])) as unknown as FailoverRun;
  const cells = [["run", ...cols.map(([h]) => h)], ...runs.map((r, i) => [String(i + 1), ...cols.map(([, f]) => f(r))]), ["median", ...cols.map(([, f]) => f(med))]];
  const widths = cells[0].map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  for (const row of cells) console.log(row.map((c, i) => c.padEnd(widths[i])).join("  "));
  const verdict = (v: number, t: number) => (v <= t ? "met" : "MISSED");
  // where the time goes, medians: kill → seen dead → claimed → secondary ready → first redelivery
  const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x)} ms` : "n/a");
  const phases: Array<[string, number[]]> = [
    ["detection (kill -> b sees a dead)", runs.map((r) => r.detectionMs)],
    ["claim (seen dead -> takeover line)", runs.map((r) => r.takeoverLogMs - r.detectionMs)],
    ["secondary start (claim -> ready)", runs.map((r) => r.secondaryReadyMs - r.takeoverLogMs)],
    ["first delivery (ready -> sink's first record)", runs.map((r) => r.firstDeliveryMs - r.secondaryReadyMs)],
  ];
  console.log(`\nwhere the time goes (medians; detection is dead_after ${t.dead_after} ms plus up to a heartbeat interval and the 20 ms status poll):`);
  for (const [name, xs] of phases) console.log(`  ${name.padEnd(46)} ${ms(median(xs)).padStart(8)}   runs: ${xs.map(ms).join(", ")}`);
  console.log(`targets (${values.timings} timings): detection <= ${secs(TARGET.detectionMs)} ${verdict(med.detectionMs, TARGET.detectionMs)} (median ${secs(med.detectionMs)}); first redelivery <= ${secs(TARGET.firstDeliveryMs)} ${verdict(med.firstDeliveryMs, TARGET.firstDeliveryMs)} (median ${secs(med.firstDeliveryMs)})`);
  const breakdown = Object.fromEntries(phases.map(([name, xs]) => [name.split(" ")[0], Math.round(median(xs))]));

  if (rows.length) console.log(`\nthroughput: ${P.messages} messages x ${P.size} bytes, ${P.connections} connections (pair: ${Math.floor(P.connections / 2)} to each node); CPU as % of one core (the machine has ${machine.nproc * 100}%):`);
  for (const r of rows) {
    const c = r.cpu;
    const cpu = `a ${c.a.pctOfCore}%, b ${c.b.pctOfCore}%, sink ${c.sink.pctOfCore}%, load ${c.load.pctOfCore}%, other processes ${c.others.pctOfCore}%; machine idle ${c.idle.pctOfCore}% (iowait ${c.iowait.pctOfCore}%)`;
    console.log(`${r.mode.padEnd(8)}  accepted ${r.acceptedPerSec} msg/s (${r.acceptSeconds} s)  delivered ${r.deliveredPerSec} msg/s (${r.deliverSeconds} s)  CPU ${cpu}${Object.keys(r.errors).length ? `  errors ${JSON.stringify(r.errors)}` : ""}`);
  }
  const of = (mode: Throughput["mode"], k: "acceptedPerSec" | "deliveredPerSec") => median(rows.filter((r) => r.mode === mode).map((r) => r[k]));
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const ratio = {
    accepted: r2(of("pair", "acceptedPerSec") / of("one node", "acceptedPerSec")),
    delivered: r2(of("pair", "deliveredPerSec") / of("one node", "deliveredPerSec")),
    perRound: rows.filter((r) => r.mode === "pair").map((r, i) => r2(r.deliveredPerSec / rows.filter((x) => x.mode === "one node")[i].deliveredPerSec)),
  };
  if (rows.length) console.log(`pair / one node (medians): accepted ${ratio.accepted}x, delivered ${ratio.delivered}x; delivered per round ${ratio.perRound.map((x) => `${x}x`).join(", ")}`);
  if (rows.length) console.log(`(target 1.6x when each node has its own cores; here ${machine.nproc} cores and one disk are shared by both nodes, the sink and the load generator)`);
  console.log(JSON.stringify({ bench: "failover", storage: values.storage, params: P, machine, timings: { profile: values.timings, ...TIMINGS }, standby: values.standby, runs, median: med, breakdown, throughput: rows, ratio }));
  if (runs.some((r) => r.lost > 0) || rows.some((r) => r.delivered < r.accepted)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/failover: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
