/*
 * threads.ts - where a Tandem node's CPU goes: its main thread against its other threads, and
 * what delivering a message costs on top of receiving it.
 *
 *   node --import tsx bench/threads.ts [--messages N=4000] [--sessions S=20] [--bytes B=4096]
 *        [--repeats R=2] [--reuse] [--handoffs N=20000]
 *
 * Two nodes (this tree's dist/) take the same smtp-source load (one connection per message
 * unless --reuse), in turns, after a warm-up of 1000 messages each:
 *   relay     to an smtp-sink: the whole path, receive → commit → deliver → record; a run ends
 *             when the sink has counted every message
 *   receive   to a next hop that accepts TCP connections and never says a word: the first
 *             deliveries wait for its greeting and every later message waits, unread, in its
 *             destination's backlog; the node receives and commits, and delivers nothing. A
 *             run ends when smtp-source has every 250.
 * Per run, from /proc/PID/task/TID/stat before and after: CPU µs a message of the main thread
 * (the event loop: SMTP sessions, policy, the queue manager, the SMTP client, the tracking
 * log's writes) and of the other threads together (libuv's thread pool doing the file-system
 * calls, V8's helpers (garbage collection), the tracking index's thread); msg/s.
 * relay − receive is what delivering costs.
 * Then, in this process, what one hand-off to the thread pool costs on this machine:
 * fs.promises.access one call at a time, 20 at a time, and the same call made synchronously;
 * CPU of the main thread and of the process a call. A message takes about nine hand-offs.
 * Printed: every run, a table of medians, one JSON line {"bench":"threads"}.
 * Needs the Debian postfix package (smtp-source, smtp-sink) and root (smtp-sink -u nobody).
 */
import { spawn } from "node:child_process";
import { accessSync, mkdtempSync, rmSync } from "node:fs";
import { access } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNode, writeNodeConfig, type RunningNode } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { machineInfo, threadCpuSeconds as threadCpu } from "./procstat.ts";
import { smtpSourceArgs } from "./postfix.ts";
import { SmtpSink } from "./smtp-sink.ts";
import { median } from "./stats.ts";

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

/** A next hop that accepts connections and never answers. */
async function silentNextHop(): Promise<{ address: HostPort; close(): void }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined).on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return { address: { host: "127.0.0.1", port }, close: () => { for (const s of sockets) s.destroy(); server.close(); } };
}

function smtpSource(target: HostPort, n: number, sessions: number, bytes: number, reuse: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("smtp-source", smtpSourceArgs(target, n, { sessions, bytes, reuse }), { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d) => { err += d; });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`smtp-source exited ${code}: ${err.trim().slice(0, 300)}`))));
  });
}

interface Mode { name: "relay" | "receive"; node: RunningNode; sink?: SmtpSink; sent: number }
interface Run { mode: string; perSec: number; mainUs: number; otherUs: number }

async function measure(m: Mode, n: number, sessions: number, bytes: number, reuse: boolean): Promise<Run> {
  const pid = m.node.proc.pid;
  const before = threadCpu(pid);
  const t0 = performance.now();
  await smtpSource(m.node.smtp, n, sessions, bytes, reuse);
  m.sent += n;
  if (m.sink) await m.sink.waitFor(m.sent, 120_000);
  const seconds = (performance.now() - t0) / 1000;
  const after = threadCpu(pid);
  let main = 0;
  let other = 0;
  for (const [tid, cpu] of after) {
    const d = cpu - (before.get(tid) ?? 0);
    if (tid === pid) main += d;
    else other += d;
  }
  return { mode: m.name, perSec: Math.round(n / seconds), mainUs: Math.round((main * 1e6) / n), otherUs: Math.round((other * 1e6) / n) };
}

/** CPU seconds of this process's main thread. */
const ownMainCpu = (): number => threadCpu(process.pid).get(process.pid) ?? NaN;

async function handoffs(n: number): Promise<Record<string, { mainUs: number; processUs: number }>> {
  const out: Record<string, { mainUs: number; processUs: number }> = {};
  const time = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
    const m0 = ownMainCpu();
    const p0 = process.cpuUsage();
    await fn();
    const p = process.cpuUsage(p0);
    out[name] = { mainUs: +(((ownMainCpu() - m0) * 1e6) / n).toFixed(1), processUs: +((p.user + p.system) / n).toFixed(1) };
  };
  const dir = tmpdir();
  await time("one at a time", async () => { for (let i = 0; i < n; i++) await access(dir); });
  await time("20 at a time", async () => { for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: 20 }, () => access(dir))); });
  await time("synchronous", () => { for (let i = 0; i < n; i++) accessSync(dir); });
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "4000" },
      sessions: { type: "string", default: "20" },
      bytes: { type: "string", default: "4096" },
      repeats: { type: "string", default: "2" },
      reuse: { type: "boolean", default: false },
      handoffs: { type: "string", default: "20000" },
    },
  });
  const n = Number(values.messages);
  const sessions = Number(values.sessions);
  const bytes = Number(values.bytes);
  const repeats = Number(values.repeats);
  const machine = machineInfo();
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`);
  const root = mkdtempSync(join(tmpdir(), "tandem-bench-threads-"));
  const procs = trackProcesses();
  const sink = await SmtpSink.start();
  const silent = await silentNextHop();
  try {
    const start = async (name: Mode["name"], nextHop: HostPort): Promise<RunningNode> => {
      const config = writeNodeConfig(join(root, name), { relay: { host: formatHostPort(nextHop) } });
      return startNode({ config, logFile: join(root, name, "tandem.log") });
    };
    const modes: Mode[] = [
      { name: "relay", node: await start("relay", sink.address), sink, sent: 0 },
      { name: "receive", node: await start("receive", silent.address), sent: 0 },
    ];
    for (const m of modes) await measure(m, 1000, sessions, bytes, values.reuse); // warm-up
    const runs: Run[] = [];
    for (let r = 0; r < repeats; r++) {
      for (const m of modes) {
        const run = await measure(m, n, sessions, bytes, values.reuse);
        runs.push(run);
        log(`${run.mode.padEnd(8)} rep ${r}: ${run.perSec} msg/s, main thread ${run.mainUs} us/msg, other threads ${run.otherUs} us/msg`);
      }
    }
    const h = await handoffs(Number(values.handoffs));
    const med = (mode: string, k: "perSec" | "mainUs" | "otherUs"): number => Math.round(median(runs.filter((x) => x.mode === mode).map((x) => x[k])));
    console.log(`\n${sessions} sessions x ${bytes} bytes, ${values.reuse ? "connections reused (-d)" : "one connection per message"}, ${n} messages a run, medians of ${repeats}`);
    console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
    console.log("node                     msg/s   main thread us/msg   other threads us/msg   total");
    const rows = (["relay", "receive"] as const).map((mode) => ({ mode, perSec: med(mode, "perSec"), mainUs: med(mode, "mainUs"), otherUs: med(mode, "otherUs") }));
    for (const r of rows) console.log(`${(r.mode === "relay" ? "relay (to smtp-sink)" : "receive (nothing sent)").padEnd(25)}${String(r.perSec).padEnd(8)}${String(r.mainUs).padEnd(21)}${String(r.otherUs).padEnd(23)}${r.mainUs + r.otherUs}`);
    const [rel, rec] = rows;
    console.log(`${"delivering (difference)".padEnd(33)}${String(rel.mainUs - rec.mainUs).padEnd(21)}${String(rel.otherUs - rec.otherUs).padEnd(23)}${rel.mainUs + rel.otherUs - rec.mainUs - rec.otherUs}`);
    console.log(`\none hand-off to the thread pool (fs.promises.access), CPU us a call:`);
    for (const [k, v] of Object.entries(h)) console.log(`  ${k.padEnd(15)} main thread ${v.mainUs}, process ${v.processUs}`);
    console.log(JSON.stringify({ bench: "threads", messages: n, sessions, bytes, reuse: values.reuse, repeats, machine, rows, handoffs: h, runs }));
  } finally {
    await procs.stopAll();
    sink.stop();
    silent.close();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/threads: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
