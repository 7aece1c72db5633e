/*
 * relay.ts - benchmark Tandem as an SMTP relay on this machine, optionally against Postfix.
 *
 *   node --import tsx bench/relay.ts [--messages N=20000] [--connections C=20] [--size S=4096]
 *        [--warmup W=2000] [--postfix auto|yes|no] [--keep]
 *
 * For each system (Tandem, then Postfix if available): a fresh sink process (test/harness/sink),
 * the relay configured to send everything to it, a warm-up of W messages (not recorded), then N
 * messages from runLoad over C connections of S bytes each. Figures per system:
 *   accepted msg/s   N / time until the last 250 from the relay
 *   delivered msg/s  N / time until the sink has recorded all N (end to end)
 *   p50/p99 ms       MAIL FROM -> 250 after DATA, and end of DATA -> 250 (the commit)
 *   memory MiB       Tandem: peak RSS (VmHWM) of its process. Postfix: the sum of PSS over its
 *                    live daemons at the end of the run (a sum of RSS would count shared
 *                    libraries once per daemon)
 *   CPU ms/msg       utime+stime of the relay's process group during the measured run / N
 *   lost/dup         accepted by the relay but never at the sink / more than once at the sink
 * Then a summary table, the Tandem/Postfix ratios, and one JSON line `{"bench":"relay",...}`.
 * Postfix: `auto` runs it when `postfix` and `smtp-source` are on PATH and we are root; `yes`
 * fails if it cannot. The machine's speed drifts on shared VMs: compare within one run only.
 *
 * Exports nothing (an entry point). What can go wrong: the node failing to start (its output is
 * printed); deliveries not completing within the timeout (reported, figures marked incomplete);
 * temp folders are removed at the end unless --keep.
 */
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runLoad, type LoadResult } from "../test/harness/load.ts";
import { startNode, writeNodeConfig } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { trackProcesses, type Proc } from "../test/harness/procs.ts";
import { startSink, type Sink } from "../test/harness/sink.ts";
import { postfixAvailability, startPostfixRelay } from "./postfix.ts";
import { groupCpuSeconds, groupPssBytes, machineInfo, peakRssBytes } from "./procstat.ts";
import { quantileOf } from "./stats.ts";

interface BenchParams {
  messages: number;
  connections: number;
  size: number;
  warmup: number;
}

interface Figures {
  system: string;
  complete: boolean;
  accepted: number;
  delivered: number;
  acceptedPerSec: number;
  deliveredPerSec: number;
  acceptSeconds: number;
  deliverSeconds: number;
  p50Ms: number;
  p99Ms: number;
  commitP50Ms: number;
  commitP99Ms: number;
  /** Tandem: peak RSS; Postfix: PSS sum at the end (see header). */
  memoryMiB: number;
  cpuSeconds: number;
  cpuMsPerMsg: number;
  rejected: number;
  failed: number;
  uncertain: number;
  lost: number;
  duplicates: number;
  errors: Record<string, number>;
}

/** A relay under test: where to send, and whose CPU and memory to count. */
interface Relay {
  system: string;
  smtp: HostPort;
  proc: Proc;
  /** Bytes: see Figures.memoryMiB. */
  memory(): number;
  stop(): Promise<void>;
}

const FROM = "bench@example.org";
const TO = (i: number): string => `rcpt${i % 100}@example.net`;

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Sends n messages and waits until the sink has `sinkTarget` records; returns timings. */
async function loadAndDrain(relay: Relay, sink: Sink, p: BenchParams, n: number, sinkTarget: number, runId: string): Promise<{ load: LoadResult; deliverMs: number; complete: boolean }> {
  const t0 = performance.now();
  const load = await runLoad({ host: relay.smtp.host, port: relay.smtp.port, total: n, concurrency: p.connections, sizeBytes: p.size, from: FROM, to: TO, runId });
  const timeoutMs = 60_000 + n * 20;
  const expected = sinkTarget - (n - load.accepted.size);
  let complete = true;
  try {
    await sink.waitForCount(expected, timeoutMs);
  } catch (err) {
    complete = false;
    log(`${relay.system}: ${(err as Error).message}`);
  }
  return { load, deliverMs: performance.now() - t0, complete };
}

/** Warm-up, measured run, figures. */
async function measure(relay: Relay, sink: Sink, p: BenchParams): Promise<Figures> {
  if (p.warmup > 0) {
    log(`${relay.system}: warm-up, ${p.warmup} messages`);
    await loadAndDrain(relay, sink, p, p.warmup, p.warmup, `warm${process.pid}`);
  }
  const base = sink.count();
  const runId = `run${process.pid}`;
  log(`${relay.system}: ${p.messages} messages x ${p.size} bytes over ${p.connections} connections`);
  const cpu0 = groupCpuSeconds(relay.proc.pid);
  const { load, deliverMs, complete } = await loadAndDrain(relay, sink, p, p.messages, base + p.messages, runId);
  const cpu1 = groupCpuSeconds(relay.proc.pid);
  const memory = relay.memory();
  await new Promise((r) => setTimeout(r, 1000)); // late duplicates would show up now
  const counts = new Map([...sink.countsByTestId()].filter(([id]) => id.startsWith(`${runId}-`)));
  let lost = 0;
  for (const id of load.accepted) if (!counts.has(id)) lost++;
  let duplicates = 0;
  for (const c of counts.values()) duplicates += c - 1;
  const n = p.messages;
  const acceptSeconds = load.elapsedMs / 1000;
  const deliverSeconds = deliverMs / 1000;
  return {
    system: relay.system,
    complete: complete && load.accepted.size === n,
    accepted: load.accepted.size,
    delivered: counts.size,
    acceptedPerSec: round(load.accepted.size / acceptSeconds, 0),
    deliveredPerSec: round(counts.size / deliverSeconds, 0),
    acceptSeconds: round(acceptSeconds, 2),
    deliverSeconds: round(deliverSeconds, 2),
    p50Ms: round(quantileOf(load.latenciesMs, 0.5)),
    p99Ms: round(quantileOf(load.latenciesMs, 0.99)),
    commitP50Ms: round(quantileOf(load.commitLatenciesMs, 0.5)),
    commitP99Ms: round(quantileOf(load.commitLatenciesMs, 0.99)),
    memoryMiB: round(memory / 2 ** 20),
    cpuSeconds: round(cpu1 - cpu0, 2),
    cpuMsPerMsg: round(((cpu1 - cpu0) * 1000) / n, 3),
    rejected: load.rejected.size,
    failed: load.failed.size,
    uncertain: load.uncertain.size,
    lost,
    duplicates,
    errors: load.errors,
  };
}

async function startTandem(dir: string, sink: Sink): Promise<Relay> {
  const config = writeNodeConfig(dir, { relay: { host: sink.address } });
  const node = await startNode({ config, listen: "127.0.0.1:0", logFile: join(dir, "tandem.log") });
  log(`tandem: pid ${node.proc.pid}, SMTP on ${formatHostPort(node.smtp)}`);
  return {
    system: "tandem",
    smtp: node.smtp,
    proc: node.proc,
    memory: () => peakRssBytes(node.proc.pid),
    async stop() {
      const st = await node.stop();
      if (st.code !== 0) log(`tandem: exit ${JSON.stringify(st)} after SIGTERM (expected code 0); log in ${join(dir, "tandem.log")}`);
    },
  };
}

async function startPostfix(dir: string, sink: Sink): Promise<Relay> {
  const pf = await startPostfixRelay({ dir, relayHost: { host: sink.host, port: sink.port } });
  log(`postfix: master pid ${pf.proc.pid}, SMTP on ${formatHostPort(pf.smtp)}`);
  return { system: "postfix", smtp: pf.smtp, proc: pf.proc, memory: () => groupPssBytes(pf.proc.pid), stop: () => pf.stop() };
}

/** Runs one system end to end with its own sink and temp folder. */
async function benchSystem(name: string, root: string, p: BenchParams, start: (dir: string, sink: Sink) => Promise<Relay>): Promise<Figures> {
  const dir = join(root, name);
  const sink = await startSink({ out: join(root, `${name}-sink.jsonl`) });
  let relay: Relay | undefined;
  try {
    relay = await start(dir, sink);
    return await measure(relay, sink, p);
  } finally {
    await relay?.stop();
    await sink.stop();
  }
}

function printTable(rows: Figures[]): void {
  const cols: Array<[string, (f: Figures) => string]> = [
    ["system", (f) => f.system + (f.complete ? "" : " (INCOMPLETE)")],
    ["accepted/s", (f) => String(f.acceptedPerSec)],
    ["delivered/s", (f) => String(f.deliveredPerSec)],
    ["p50 ms", (f) => String(f.p50Ms)],
    ["p99 ms", (f) => String(f.p99Ms)],
    ["commit p50/p99", (f) => `${f.commitP50Ms}/${f.commitP99Ms}`],
    ["memory MiB", (f) => String(f.memoryMiB)],
    ["CPU ms/msg", (f) => String(f.cpuMsPerMsg)],
    ["lost/dup", (f) => `${f.lost}/${f.duplicates}`],
    ["rej/fail/uncert", (f) => `${f.rejected}/${f.failed}/${f.uncertain}`],
  ];
  const cells = [cols.map(([h]) => h), ...rows.map((r) => cols.map(([, get]) => get(r)))];
  const widths = cols.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  for (const row of cells) console.log(row.map((c, i) => c.padEnd(widths[i])).join("  "));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "20000" },
      connections: { type: "string", default: "20" },
      size: { type: "string", default: "4096" },
      warmup: { type: "string", default: "2000" },
      postfix: { type: "string", default: "auto" },
      keep: { type: "boolean", default: false },
    },
    strict: true,
  });
  const p: BenchParams = { messages: Number(values.messages), connections: Number(values.connections), size: Number(values.size), warmup: Number(values.warmup) };
  for (const [k, v] of Object.entries(p)) {
    if (!Number.isInteger(v) || v < (k === "warmup" ? 0 : 1)) throw new Error(`--${k} wants a positive integer, got ${v}`);
  }
  if (!["auto", "yes", "no"].includes(values.postfix)) throw new Error(`--postfix wants auto, yes or no, got ${values.postfix}`);
  const pfAvail = postfixAvailability();
  const withPostfix = values.postfix === "yes" || (values.postfix === "auto" && pfAvail.ok);
  if (values.postfix === "yes" && !pfAvail.ok) throw new Error(`--postfix yes, but Postfix cannot run here: ${pfAvail.reason}`);
  if (values.postfix === "auto" && !pfAvail.ok) log(`postfix: skipped (${pfAvail.reason})`);

  const machine = machineInfo();
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`);
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-bench-"));
  chmodSync(root, 0o755); // Postfix's daemons (user postfix) must reach their queue inside
  const rows: Figures[] = [];
  try {
    rows.push(await benchSystem("tandem", root, p, startTandem));
    if (withPostfix) rows.push(await benchSystem("postfix", root, p, startPostfix));
  } finally {
    await procs.stopAll();
    if (values.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }

  console.log(`\nrelay benchmark: ${p.messages} messages x ${p.size} bytes, ${p.connections} connections, warm-up ${p.warmup}`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
  printTable(rows);
  const [tandem, postfix] = rows;
  let ratios: Record<string, number> | undefined;
  if (tandem && postfix) {
    ratios = {
      acceptedPerSec: round(tandem.acceptedPerSec / postfix.acceptedPerSec, 2),
      deliveredPerSec: round(tandem.deliveredPerSec / postfix.deliveredPerSec, 2),
      p99Ms: round(tandem.p99Ms / postfix.p99Ms, 2),
      cpuMsPerMsg: round(tandem.cpuMsPerMsg / postfix.cpuMsPerMsg, 2),
      memoryMiB: round(tandem.memoryMiB / postfix.memoryMiB, 2),
    };
    console.log(`\nTandem/Postfix: ${Object.entries(ratios).map(([k, v]) => `${k} ${v}x`).join(", ")}`);
  }
  console.log(JSON.stringify({ bench: "relay", params: p, machine, results: rows, ratios }));
  if (rows.some((r) => !r.complete || r.lost > 0)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/relay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
