/*
 * smtp-source.ts - Tandem against Postfix, driven by Postfix's own load tools, in one run:
 *   smtp-source -> relay (Tandem | Postfix) -> smtp-sink
 *
 *   node --import tsx bench/smtp-source.ts [--messages N=3000] [--repeats R=2]
 *        [--cases 20:4096,20:4096:d,20:1024,20:102400,1:4096,50:4096] [--old-greeting] [--refuse-at-limit]
 *        [--workers 1,auto] [--env-variant NAME=VALUE,...] [--open-loop auto|RATE] [--open-loop-seconds S=20]
 *        [--open-loop-repeats R=1] [--open-loop-dump DIR] [--config-variant SECTION.KEY=VALUE,...]
 *        [--baseline DIR] [--keep]
 *
 * A case is SESSIONS:BYTES, with ":d" for smtp-source -d (many messages per connection; without
 * it every message has its own TCP connection, smtp-source's default and how most clients hand
 * mail to a relay). Each relay has its own smtp-sink (-c counter) as the next hop, and all of
 * them stay up for the whole run; the repeats are the outer loop and the relays alternate inside
 * each case, so a drift of the machine's speed hits them alike. `--old-greeting` adds a second
 * Tandem with smtp.greeting_delay 100ms: smtp-server's fixed pause before Tandem made it a
 * setting (the before/after of the greeting change in the same run). `--refuse-at-limit` adds a
 * Tandem with smtp.connection_wait 0s: 421 at once beyond max_connections, as smtp-server does,
 * instead of a wait for a slot (the before/after of that change). `--workers 1,auto` runs
 * one Tandem per smtp.workers value ("tandem" for 1, "tandem-wN" for N, "tandem-wauto"), all in
 * the same run; the CPU figure of a node with workers counts its workers (same process group).
 * `--env-variant UV_THREADPOOL_SIZE=16` adds one Tandem per NAME=VALUE, started with that
 * variable in its environment ("tandem-NAME=VALUE"): an A/B of a runtime setting in one run.
 * `--config-variant tracking.search=false` adds one Tandem per SECTION.KEY=VALUE with that
 * setting in its tandem.yaml (VALUE read as JSON when it parses, else as a string), named
 * "tandem-SECTION.KEY=VALUE": an A/B of a setting in one run.
 * `--baseline DIR` adds a Tandem run from DIR/dist/cli/main.js ("tandem-base"): another
 * checkout, built, e.g. a worktree at main - the before/after of a code change in one run.
 * Figures per run:
 *   accepted/s   N / time until smtp-source exits (every message got its 250)
 *   delivered/s  N / time until the relay's smtp-sink has counted all N (end to end)
 *   CPU us/msg   utime+stime of the relay's process group during the run / N
 * Printed: every run, then a table of medians per case with each Tandem/Postfix ratio beside,
 * then one JSON line {"bench":"smtp-source",...}.
 * `--open-loop` adds a fixed-arrival-rate run after the cases (smtp-source is a closed loop: it
 * sends the next message only when the last was answered, so it cannot show latency at a given
 * load): message i is due at t0 + i/RATE on a connection of its own (a byte-level client with
 * TCP_NODELAY, 4 KiB, no pipelining), whatever the relay's pace, for S seconds; time-to-250 is measured from the
 * message's due time to the 250 after its DATA, so a relay that falls behind is charged the
 * wait (no coordinated omission). `auto` is half of the first Tandem's median delivered msg/s in
 * the 20 x 4 KiB case of this run (or of the first case); every relay gets the same rate. The
 * generator's own lateness (start - due) is printed beside it: it runs on the same cores. Each
 * time-to-250 is split into setup (due → EHLO answered: connect, greeting, EHLO, and the
 * generator's lateness) and transaction (EHLO answered → 250: MAIL, RCPT, DATA, the message and
 * the relay's commit). Beside each open-loop run, bench/disk-probe.ts times what a commit costs
 * the disk alone (a 4 KiB file written, fsynced, renamed, its folder fsynced, every 50 ms in a
 * thread of its own, on the same file system): no relay can answer 250 sooner than that, and its
 * tail is the VM's disk, not the relay. `--open-loop-repeats R` runs the open loop R times, the
 * relays alternating inside each repeat (as the cases do), and prints every run.
 * `--open-loop-dump DIR` writes each open-loop run's messages to DIR/RELAY-REPEAT.csv (due time
 * from the run's start, setup and time-to-250, ms): to see whether the tail is spread out or
 * comes in bursts (stalls).
 * Needs root, the Debian postfix package
 * (smtp-source, smtp-sink, postfix). The machine's speed drifts on shared VMs: compare within
 * one run only. Exits non-zero if a run did not complete.
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildTestMessage } from "../test/harness/load.ts";
import { startNode, writeNodeConfig } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { trackProcesses, type Proc } from "../test/harness/procs.ts";
import { RawSmtpClient, type RawReply } from "../test/harness/raw-smtp.ts";
import { postfixAvailability, smtpSourceArgs, startPostfixRelay } from "./postfix.ts";
import { startDiskProbe } from "./disk-probe.ts";
import { SmtpSink } from "./smtp-sink.ts";
import { groupCpuSeconds, machineInfo } from "./procstat.ts";
import { median, quantile } from "./stats.ts";

interface Case { sessions: number; bytes: number; reuse: boolean }
interface Run { relay: string; c: Case; rep: number; acceptPerSec: number; deliverPerSec: number; cpuUsPerMsg: number; ok: boolean }
interface Relay { name: string; smtp: HostPort; proc: Proc; sink: SmtpSink; stop(): Promise<void> }

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

function smtpSource(target: HostPort, n: number, c: Case): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn("smtp-source", smtpSourceArgs(target, n, c), { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d) => { err += d; });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (err.trim()) log(`smtp-source: ${err.trim().split("\n").slice(-3).join(" | ")}`);
      resolve(code ?? -1);
    });
  });
}

async function runOne(relay: Relay, c: Case, n: number, rep: number): Promise<Run> {
  const base = relay.sink.count;
  const cpu0 = groupCpuSeconds(relay.proc.pid);
  const t0 = performance.now();
  const code = await smtpSource(relay.smtp, n, c);
  const acceptS = (performance.now() - t0) / 1000;
  const delivered = await relay.sink.waitFor(base + n, 60_000 + n * 50);
  const deliverS = (performance.now() - t0) / 1000;
  const cpu = groupCpuSeconds(relay.proc.pid) - cpu0;
  const run: Run = { relay: relay.name, c, rep, acceptPerSec: Math.round(n / acceptS), deliverPerSec: Math.round(n / deliverS), cpuUsPerMsg: Math.round((cpu * 1e6) / n), ok: code === 0 && delivered };
  log(`${relay.name.padEnd(13)} ${caseName(c).padEnd(14)} rep ${rep}: accepted ${run.acceptPerSec}/s delivered ${run.deliverPerSec}/s CPU ${run.cpuUsPerMsg} us/msg${run.ok ? "" : ` NOT OK (smtp-source exit ${code}, sink ${relay.sink.count - base}/${n})`}`);
  return run;
}

interface OpenLoopRun {
  relay: string; rate: number; messages: number; accepted: number; failed: number; delivered: boolean;
  p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number; lateP99Ms: number; cpuUsPerMsg: number;
  /** the benchmark process's own CPU (the generator and the disk probe's thread) per message */
  generatorCpuUsPerMsg: number;
  /** due → EHLO answered (connect, greeting, EHLO), and EHLO answered → 250 after DATA (MAIL … commit) */
  setupP50Ms: number; setupP99Ms: number; txP50Ms: number; txP99Ms: number;
  /** the disk probe's commits beside the run (bench/disk-probe.ts) */
  diskP50Ms: number; diskP99Ms: number; diskMaxMs: number;
}

const ms = (x: number): number => Math.round(x * 10) / 10;

/**
 * One message on its own connection (greeting, EHLO, MAIL, RCPT, DATA, QUIT), each command sent
 * once the last was answered (no pipelining, as nodemailer's client); resolves at its 250 after
 * DATA, or with the error; `connected` is when EHLO was answered. A byte-level client
 * (test/harness/raw-smtp.ts) with TCP_NODELAY, as a sending MTA: the generator shares the cores
 * with the relays (its own CPU per message is printed: "generator CPU").
 */
async function sendOnNewConnection(target: HostPort, message: Buffer): Promise<{ err?: Error; connected: number }> {
  let connected = NaN;
  let c: RawSmtpClient | undefined;
  const expect = async (reply: Promise<RawReply>, code: number, step: string): Promise<void> => {
    const r = await reply;
    if (r.type !== "reply" || r.code !== code) throw new Error(`${step}: ${r.type === "reply" ? r.text : r.type === "closed" ? `closed ${r.error ?? ""}` : r.text}`);
  };
  try {
    c = await RawSmtpClient.connect(target.port, target.host, 30_000, undefined, true);
    await expect(c.readReply(30_000), 220, "greeting");
    await expect(c.command("EHLO open-loop.bench.test", 30_000), 250, "EHLO");
    connected = performance.now();
    await expect(c.command("MAIL FROM:<a@example.org>", 30_000), 250, "MAIL");
    await expect(c.command("RCPT TO:<b@example.net>", 30_000), 250, "RCPT");
    await expect(c.command("DATA", 30_000), 354, "DATA");
    c.write(Buffer.concat([message, DOT]));
    await expect(c.readReply(30_000), 250, "end of data");
    const done = c;
    done.write("QUIT\r\n");
    void done.waitClosed(30_000).catch(() => false).finally(() => done.close());
    return { connected };
  } catch (err) {
    c?.close();
    return { err: err instanceof Error ? err : new Error(String(err)), connected };
  }
}

const DOT = Buffer.from(".\r\n");

/** Open loop (see the header): message i due at t0 + i/rate, each on its own connection. */
async function runOpenLoop(relay: Relay, rate: number, seconds: number, bytes: number, probeDir: string, dumpFile?: string): Promise<OpenLoopRun> {
  const n = Math.max(1, Math.round(rate * seconds));
  const message = buildTestMessage("open-loop", "a@example.org", "b@example.net", bytes);
  const base = relay.sink.count;
  const cpu0 = groupCpuSeconds(relay.proc.pid);
  const latencies: number[] = [];
  const setups: number[] = [];
  const transactions: number[] = [];
  const lateness: number[] = [];
  const rows: string[] = ["due_ms,setup_ms,total_ms"];
  const errors = new Map<string, number>();
  let failed = 0;
  const sends: Promise<void>[] = [];
  const probe = startDiskProbe(probeDir, 50);
  const genCpu0 = process.cpuUsage();
  const t0 = performance.now() + 20;
  for (let i = 0; i < n; ) {
    const now = performance.now();
    // start every message that is due; a late timer starts several at once, each timed from its own due time
    for (; i < n && t0 + (i * 1000) / rate <= now; i++) {
      const due = t0 + (i * 1000) / rate;
      lateness.push(now - due);
      sends.push(sendOnNewConnection(relay.smtp, message).then(({ err, connected }) => {
        if (err) {
          failed++;
          const why = err.message.replace(/\s+/g, " ").slice(0, 120);
          errors.set(why, (errors.get(why) ?? 0) + 1);
          return;
        }
        const now = performance.now();
        latencies.push(now - due);
        setups.push(connected - due);
        transactions.push(now - connected);
        if (dumpFile) rows.push(`${(due - t0).toFixed(1)},${(connected - due).toFixed(3)},${(now - due).toFixed(3)}`);
      }));
    }
    if (i < n) await new Promise((r) => setTimeout(r, Math.max(0, t0 + (i * 1000) / rate - performance.now())));
  }
  await Promise.all(sends);
  if (dumpFile) writeFileSync(dumpFile, rows.join("\n") + "\n");
  const genCpu = process.cpuUsage(genCpu0);
  const disk = await probe.stop();
  const delivered = await relay.sink.waitFor(base + latencies.length, 60_000);
  const cpu = groupCpuSeconds(relay.proc.pid) - cpu0;
  for (const a of [latencies, setups, transactions, lateness]) a.sort((x, y) => x - y);
  const run: OpenLoopRun = {
    relay: relay.name, rate, messages: n, accepted: latencies.length, failed, delivered,
    p50Ms: ms(quantile(latencies, 0.5)), p90Ms: ms(quantile(latencies, 0.9)), p99Ms: ms(quantile(latencies, 0.99)), maxMs: ms(latencies.at(-1) ?? NaN),
    lateP99Ms: ms(quantile(lateness, 0.99)), cpuUsPerMsg: Math.round((cpu * 1e6) / n), generatorCpuUsPerMsg: Math.round((genCpu.user + genCpu.system) / n),
    setupP50Ms: ms(quantile(setups, 0.5)), setupP99Ms: ms(quantile(setups, 0.99)), txP50Ms: ms(quantile(transactions, 0.5)), txP99Ms: ms(quantile(transactions, 0.99)),
    diskP50Ms: ms(quantile(disk.commitsMs, 0.5)), diskP99Ms: ms(quantile(disk.commitsMs, 0.99)), diskMaxMs: ms(disk.commitsMs.at(-1) ?? NaN),
  };
  log(`${relay.name.padEnd(13)} open loop ${rate}/s x ${n}: time-to-250 p50 ${run.p50Ms} p90 ${run.p90Ms} p99 ${run.p99Ms} max ${run.maxMs} ms, CPU ${run.cpuUsPerMsg} us/msg, generator late p99 ${run.lateP99Ms} ms, generator CPU ${run.generatorCpuUsPerMsg} us/msg; setup p99 ${run.setupP99Ms}, transaction p99 ${run.txP99Ms}; disk commit alone p50 ${run.diskP50Ms} p99 ${run.diskP99Ms} max ${run.diskMaxMs} ms${failed || !delivered ? ` NOT OK (${failed} failed, sink ${relay.sink.count - base}/${latencies.length})` : ""}`);
  for (const [why, count] of errors) log(`  ${count} x ${why}`);
  return run;
}

const caseName = (c: Case): string => `${c.sessions}x${c.bytes}${c.reuse ? " -d" : ""}`;

function parseCases(text: string): Case[] {
  return text.split(",").map((t) => {
    const [s, b, d] = t.split(":");
    const c = { sessions: Number(s), bytes: Number(b), reuse: d === "d" };
    if (!Number.isInteger(c.sessions) || c.sessions < 1 || !Number.isInteger(c.bytes) || c.bytes < 1 || (d !== undefined && d !== "d")) throw new Error(`bad case "${t}": SESSIONS:BYTES[:d]`);
    return c;
  });
}

/** Medians of whole msg/s and µs figures are printed whole. */
const medianWhole = (v: number[]): number => Math.round(median(v));

function printTable(runs: Run[], cases: Case[], relays: string[]): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  const head = ["case", ...relays.flatMap((r) => [`${r} deliv/s`, `${r} CPU us`]), ...relays.filter((r) => r !== "postfix").map((r) => `${r}/postfix`)];
  const cells: string[][] = [head];
  for (const c of cases) {
    const fig: Record<string, { deliver: number; accept: number; cpu: number }> = {};
    for (const r of relays) {
      const ok = runs.filter((x) => x.relay === r && caseName(x.c) === caseName(c) && x.ok);
      fig[r] = ok.length ? { deliver: medianWhole(ok.map((x) => x.deliverPerSec)), accept: medianWhole(ok.map((x) => x.acceptPerSec)), cpu: medianWhole(ok.map((x) => x.cpuUsPerMsg)) } : { deliver: NaN, accept: NaN, cpu: NaN };
    }
    const ratios = relays.filter((r) => r !== "postfix").map((r) => Math.round((fig[r].deliver / fig.postfix.deliver) * 100) / 100);
    cells.push([caseName(c), ...relays.flatMap((r) => [String(fig[r].deliver), String(fig[r].cpu)]), ...ratios.map((x) => `${x}x`)]);
    rows.push({ case: caseName(c), ...fig });
  }
  const widths = head.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  for (const row of cells) console.log(row.map((x, i) => x.padEnd(widths[i])).join("  "));
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "3000" },
      repeats: { type: "string", default: "2" },
      cases: { type: "string", default: "20:4096,20:4096:d,20:1024,20:102400,1:4096,50:4096" },
      "old-greeting": { type: "boolean", default: false },
      "refuse-at-limit": { type: "boolean", default: false },
      workers: { type: "string", default: "1" },
      "env-variant": { type: "string", default: "" },
      "config-variant": { type: "string", default: "" },
      "open-loop-repeats": { type: "string", default: "1" },
      baseline: { type: "string" },
      "open-loop": { type: "string" },
      "open-loop-seconds": { type: "string", default: "20" },
      "open-loop-dump": { type: "string" },
      keep: { type: "boolean", default: false },
    },
    strict: true,
  });
  const n = Number(values.messages);
  const repeats = Number(values.repeats);
  const cases = parseCases(values.cases);
  const avail = postfixAvailability();
  if (!avail.ok) throw new Error(`Postfix cannot run here: ${avail.reason}`);
  const machine = machineInfo();
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`);
  const procs = trackProcesses();
  const root = mkdtempSync(join(tmpdir(), "tandem-bench-"));
  chmodSync(root, 0o755); // Postfix's daemons (user postfix) must reach their queue inside
  const relays: Relay[] = [];
  const sinks: SmtpSink[] = [];
  const runs: Run[] = [];
  const openRuns: OpenLoopRun[] = [];
  try {
    const tandem = async (name: string, smtp: Record<string, unknown>, env?: NodeJS.ProcessEnv, distCli?: string, extra: Record<string, unknown> = {}): Promise<Relay> => {
      const sink = await SmtpSink.start();
      sinks.push(sink);
      const dir = join(root, name);
      const config = writeNodeConfig(dir, { ...extra, relay: { host: formatHostPort(sink.address) }, smtp: { ...(extra.smtp as object), ...smtp } });
      const node = await startNode({ config, listen: "127.0.0.1:0", logFile: join(dir, "tandem.log"), env, distCli });
      log(`${name}: pid ${node.proc.pid}, SMTP on ${formatHostPort(node.smtp)}`);
      return { name, smtp: node.smtp, proc: node.proc, sink, stop: async () => void (await node.stop()) };
    };
    for (const w of values.workers.split(",")) {
      relays.push(await tandem(w === "1" ? "tandem" : `tandem-w${w}`, { workers: w === "auto" ? "auto" : Number(w) }));
    }
    if (values.baseline) relays.push(await tandem("tandem-base", {}, undefined, join(values.baseline, "dist/cli/main.js")));
    if (values["old-greeting"]) relays.push(await tandem("tandem-100ms", { greeting_delay: "100ms" }));
    if (values["refuse-at-limit"]) relays.push(await tandem("tandem-cw0", { connection_wait: "0s" }));
    for (const v of values["env-variant"].split(",").filter(Boolean)) {
      const eq = v.indexOf("=");
      if (eq < 1) throw new Error(`--env-variant "${v}": NAME=VALUE`);
      relays.push(await tandem(`tandem-${v}`, {}, { ...process.env, [v.slice(0, eq)]: v.slice(eq + 1) }));
    }
    for (const v of values["config-variant"].split(",").filter(Boolean)) {
      const m = /^([a-z_]+(?:\.[a-z_]+)+)=(.*)$/.exec(v);
      if (!m) throw new Error(`--config-variant "${v}": SECTION.KEY=VALUE (e.g. tracking.search=false)`);
      const keys = m[1].split(".");
      let value: unknown;
      try { value = JSON.parse(m[2]); } catch { value = m[2]; }
      const tree = keys.reduceRight<unknown>((inner, k) => ({ [k]: inner }), value) as Record<string, unknown>;
      relays.push(await tandem(`tandem-${v}`, {}, undefined, undefined, tree));
    }
    const pfSink = await SmtpSink.start();
    sinks.push(pfSink);
    const pf = await startPostfixRelay({ dir: join(root, "postfix"), relayHost: pfSink.address });
    log(`postfix: master pid ${pf.proc.pid}, SMTP on ${formatHostPort(pf.smtp)}`);
    relays.push({ name: "postfix", smtp: pf.smtp, proc: pf.proc, sink: pfSink, stop: () => pf.stop() });

    log("warm-up (not recorded)");
    for (const r of relays) await runOne(r, { sessions: 20, bytes: 4096, reuse: false }, Math.min(n, 1000), 0);
    for (let rep = 1; rep <= repeats; rep++) {
      for (const c of cases) for (const r of relays) runs.push(await runOne(r, c, n, rep));
    }
    if (values["open-loop"] !== undefined) {
      let rate = Number(values["open-loop"]);
      if (values["open-loop"] === "auto") {
        const c = cases.find((x) => x.sessions === 20 && x.bytes === 4096 && !x.reuse) ?? cases[0];
        const top = runs.filter((x) => x.relay === relays[0].name && caseName(x.c) === caseName(c) && x.ok).map((x) => x.deliverPerSec);
        if (!top.length) throw new Error(`--open-loop auto: no completed ${caseName(c)} run of ${relays[0].name} to take the rate from`);
        rate = Math.max(1, Math.round(medianWhole(top) / 2));
        log(`open loop: half of ${relays[0].name}'s median ${medianWhole(top)} msg/s (${caseName(c)}) = ${rate}/s`);
      }
      if (!(rate > 0)) throw new Error(`--open-loop: "${values["open-loop"]}" is neither auto nor a rate > 0`);
      for (let rep = 0; rep < Number(values["open-loop-repeats"]); rep++) {
        for (const r of relays) {
          const dump = values["open-loop-dump"] && join(values["open-loop-dump"], `${r.name}-${rep + 1}.csv`);
          openRuns.push(await runOpenLoop(r, rate, Number(values["open-loop-seconds"]), 4096, join(root, "disk-probe"), dump));
        }
      }
    }
  } finally {
    for (const r of relays) await r.stop().catch(() => undefined);
    for (const s of sinks) s.stop();
    await procs.stopAll();
    if (values.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
  console.log(`\nsmtp-source -> relay -> smtp-sink: ${n} messages a run, ${repeats} repeats, medians of the runs that completed`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
  const rows = printTable(runs, cases, relays.map((r) => r.name));
  if (openRuns.length) {
    console.log(`\nopen loop, 4 KiB, one connection per message, ${openRuns[0].rate} msg/s for ${values["open-loop-seconds"]} s: time-to-250 (from each message's due time) in ms`);
    console.log("relay          p50     p90     p99     max     CPU us/msg  generator late p99, CPU us/msg  setup p50/p99  transaction p50/p99  disk commit alone p50/p99/max");
    for (const o of openRuns) console.log(`${o.relay.padEnd(13)}  ${[o.p50Ms, o.p90Ms, o.p99Ms, o.maxMs].map((x) => String(x).padEnd(6)).join("  ")}  ${String(o.cpuUsPerMsg).padEnd(10)}  ${`${o.lateP99Ms}, ${o.generatorCpuUsPerMsg}`.padEnd(30)}  ${`${o.setupP50Ms}/${o.setupP99Ms}`.padEnd(13)}  ${`${o.txP50Ms}/${o.txP99Ms}`.padEnd(19)}  ${o.diskP50Ms}/${o.diskP99Ms}/${o.diskMaxMs}`);
  }
  console.log(JSON.stringify({ bench: "smtp-source", messages: n, repeats, machine, rows, runs, openLoop: openRuns }));
  if (runs.some((r) => !r.ok) || openRuns.some((o) => o.failed > 0 || !o.delivered)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/smtp-source: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
