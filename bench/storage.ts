/*
 * storage.ts - what replicated storage costs: one node, a pair on shared storage, and a pair on
 * replicated storage (every message copied to the partner before its 250), in one run.
 *
 *   node --import tsx bench/storage.ts [--messages N=3000] [--connections C=20] [--size S=4096]
 *        [--rounds R=2] [--warmup W=300] [--keep]
 *
 * Three set-ups, all up for the whole run, each with its own sink (test/harness/sink.ts) as the
 * next hop: "single" (one node, no cluster), "shared" (nodes a, b over one spool root) and
 * "replicated" (a, b, each spool in its own folder, copies over TLS/HTTP/2 to the partner).
 * The load goes to node a alone (b is a's shadow holder in the replicated pair, and idle in the
 * shared pair). Per round the set-ups alternate, so a drift of the machine's speed hits them
 * alike. Two clients:
 *   runLoad     our client, C connections each reused for many messages; time to 250 per
 *               message (MAIL FROM → 250 after DATA) p50/p99, and the commit (end of DATA → 250)
 *   smtp-source Postfix's load tool, one TCP connection per message (its default; how most MTAs
 *               hand mail to a relay), C sessions; when it is on PATH
 * Figures: accepted/s (N / time to the last 250), delivered/s (N / time until the sink has all),
 * node CPU ms/msg (utime+stime of the node processes' groups — a and b for the pairs — per
 * message: on one machine the holder's work competes with the origin's for the same cores).
 * Prints a table of medians with replicated/single and shared/single ratios, and one JSON line
 * {"bench":"storage",...}. The machine's speed drifts on shared VMs: compare within one run.
 * Exports nothing (an entry point).
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCluster, type TestCluster } from "../test/harness/cluster.ts";
import { runLoad } from "../test/harness/load.ts";
import { startNode, writeNodeConfig, defaultNodeConfig, type RunningNode } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { startSink, type Sink } from "../test/harness/sink.ts";
import { groupCpuSeconds, machineInfo } from "./procstat.ts";
import { median as medianOf, quantileOf } from "./stats.ts";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "3000" },
    connections: { type: "string", default: "20" },
    size: { type: "string", default: "4096" },
    rounds: { type: "string", default: "2" },
    warmup: { type: "string", default: "300" },
    keep: { type: "boolean", default: false },
  },
  strict: true,
});
const P = { messages: Number(values.messages), connections: Number(values.connections), size: Number(values.size), rounds: Number(values.rounds), warmup: Number(values.warmup) };
const FROM = "bench@example.org";
const TO = (i: number): string => `rcpt${i % 100}@example.net`;
type Mode = "single" | "shared" | "replicated";
type Client = "runLoad" | "smtp-source";
interface Setup { mode: Mode; smtp: HostPort; sink: Sink; pids: number[]; stop(): Promise<void> }
interface Row { mode: Mode; client: Client; round: number; acceptedPerSec: number; deliveredPerSec: number; p50Ms?: number; p99Ms?: number; commitP50Ms?: number; commitP99Ms?: number; cpuMsPerMsg: number; ok: boolean }

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}
const tenths = (x: number): number => Math.round(x * 10) / 10;
const pct = (xs: number[], q: number): number => tenths(quantileOf(xs, q));
const median = (xs: number[]): number => tenths(medianOf(xs));

async function setup(root: string, mode: Mode): Promise<Setup> {
  const dir = join(root, mode);
  const sink = await startSink({ out: join(root, `${mode}-sink.jsonl`) });
  if (mode === "single") {
    const config = writeNodeConfig(dir, { relay: { host: sink.address, networks: ["127.0.0.0/8"] } }, defaultNodeConfig(dir));
    const node: RunningNode = await startNode({ config, logFile: join(dir, "a.out") });
    return { mode, smtp: node.smtp, sink, pids: [node.proc.pid!], stop: async () => { await node.stop(); await sink.stop(); } };
  }
  const cluster: TestCluster = await createCluster({ dir, relayHost: sink.address, ...(mode === "replicated" ? { replicated: {} } : {}) });
  await cluster.start("a");
  await cluster.start("b");
  await cluster.waitFor("a and b alive, each delivering its own spool", async () => {
    for (const id of ["a", "b"]) {
      const s = await cluster.status(id);
      if (s.peers[0].status.type !== "alive" || s.ownSpool !== "delivering" || s.secondaries.length > 0) return false;
      if (mode === "replicated" && s.replication.connection !== "up") return false;
    }
    return true;
  }, 60_000);
  return { mode, smtp: cluster.addresses.get("a")!.smtp, sink, pids: ["a", "b"].map((id) => cluster.node(id)!.proc.pid!), stop: async () => { await cluster.stopAll(); await sink.stop(); } };
}

function smtpSource(target: HostPort, n: number): Promise<number> {
  const args = ["-s", String(P.connections), "-m", String(n), "-l", String(P.size), "-f", FROM, "-t", "rcpt@example.net", formatHostPort(target)];
  return new Promise((resolve, reject) => {
    const child = spawn("smtp-source", args, { stdio: ["ignore", "ignore", "inherit"] });
    child.once("error", reject);
    child.once("exit", (code) => resolve(code ?? -1));
  });
}

async function run(s: Setup, client: Client, round: number): Promise<Row> {
  const base = s.sink.count();
  const cpu0 = s.pids.reduce((sum, pid) => sum + groupCpuSeconds(pid), 0);
  const t0 = performance.now();
  let accepted: number;
  let lat: { p50Ms?: number; p99Ms?: number; commitP50Ms?: number; commitP99Ms?: number } = {};
  if (client === "runLoad") {
    const r = await runLoad({ ...s.smtp, total: P.messages, concurrency: P.connections, sizeBytes: P.size, from: FROM, to: TO, runId: `${s.mode}${round}` });
    accepted = r.accepted.size;
    lat = { p50Ms: pct(r.latenciesMs, 0.5), p99Ms: pct(r.latenciesMs, 0.99), commitP50Ms: pct(r.commitLatenciesMs, 0.5), commitP99Ms: pct(r.commitLatenciesMs, 0.99) };
  } else {
    const code = await smtpSource(s.smtp, P.messages);
    accepted = code === 0 ? P.messages : 0;
  }
  const acceptMs = performance.now() - t0;
  const ok = await s.sink.waitForCount(base + P.messages, 120_000).then(() => true, () => false);
  const deliverMs = performance.now() - t0;
  const cpuMsPerMsg = Math.round(((s.pids.reduce((sum, pid) => sum + groupCpuSeconds(pid), 0) - cpu0) * 1000 / P.messages) * 100) / 100;
  const row: Row = { mode: s.mode, client, round, acceptedPerSec: Math.round(accepted / (acceptMs / 1000)), deliveredPerSec: Math.round(P.messages / (deliverMs / 1000)), ...lat, cpuMsPerMsg, ok: ok && accepted === P.messages };
  log(`${s.mode.padEnd(10)} ${client.padEnd(11)} round ${round}: accepted ${row.acceptedPerSec}/s delivered ${row.deliveredPerSec}/s${row.p50Ms !== undefined ? ` time to 250 p50 ${row.p50Ms} ms p99 ${row.p99Ms} ms (commit p50 ${row.commitP50Ms} p99 ${row.commitP99Ms})` : ""}; node CPU ${cpuMsPerMsg} ms/msg${row.ok ? "" : " NOT COMPLETE"}`);
  return row;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const describe = `${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`;
  log(`machine: ${describe}`);
  const haveSmtpSource = spawnSync("sh", ["-c", "command -v smtp-source"]).status === 0;
  const clients: Client[] = haveSmtpSource ? ["runLoad", "smtp-source"] : ["runLoad"];
  if (!haveSmtpSource) log("smtp-source not on PATH (Debian postfix): only our own client runs");
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-storage-"));
  const rows: Row[] = [];
  const setups: Setup[] = [];
  try {
    for (const mode of ["single", "shared", "replicated"] as const) setups.push(await setup(root, mode));
    for (const s of setups) {
      if (P.warmup > 0) {
        const base = s.sink.count();
        const w = await runLoad({ ...s.smtp, total: P.warmup, concurrency: P.connections, sizeBytes: P.size, from: FROM, to: TO, runId: `w${s.mode}` });
        await s.sink.waitForCount(base + w.accepted.size, 60_000);
      }
    }
    for (let round = 1; round <= P.rounds; round++) for (const client of clients) for (const s of setups) rows.push(await run(s, client, round));
  } finally {
    for (const s of setups) await s.stop().catch(() => undefined);
    await procs.stopAll();
    if (values.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
  console.log(`\nstorage benchmark: ${P.messages} messages x ${P.size} bytes, ${P.connections} connections, load to node a; medians of ${P.rounds} round(s); machine: ${describe}`);
  const table: Record<string, unknown>[] = [];
  for (const client of clients) {
    const of = (mode: Mode, k: keyof Row) => median(rows.filter((r) => r.mode === mode && r.client === client && r.ok).map((r) => r[k] as number));
    for (const mode of ["single", "shared", "replicated"] as const) {
      const line = {
        client: client === "runLoad" ? "runLoad (reused connections)" : "smtp-source (a connection per message)", mode,
        acceptedPerSec: of(mode, "acceptedPerSec"), deliveredPerSec: of(mode, "deliveredPerSec"), cpuMsPerMsg: of(mode, "cpuMsPerMsg"),
        vsSingle: Math.round((of(mode, "deliveredPerSec") / of("single", "deliveredPerSec")) * 100) / 100,
        ...(client === "runLoad" ? { p50Ms: of(mode, "p50Ms"), p99Ms: of(mode, "p99Ms"), commitP50Ms: of(mode, "commitP50Ms"), commitP99Ms: of(mode, "commitP99Ms") } : {}),
      };
      table.push(line);
      console.log(`${line.client.padEnd(40)} ${mode.padEnd(10)} accepted ${line.acceptedPerSec}/s  delivered ${line.deliveredPerSec}/s  (${line.vsSingle}x single)  node CPU ${line.cpuMsPerMsg} ms/msg${"p50Ms" in line ? `  time to 250 p50 ${line.p50Ms} ms p99 ${line.p99Ms} ms; commit p50 ${line.commitP50Ms} ms p99 ${line.commitP99Ms} ms` : ""}`);
    }
  }
  console.log("target: replicated >= 0.7x single (delivered/s)");
  console.log(JSON.stringify({ bench: "storage", params: P, machine, table, rows }));
  if (rows.some((r) => !r.ok)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/storage: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
