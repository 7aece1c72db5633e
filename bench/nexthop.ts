/*
 * nexthop.ts - Tandem's SMTP client against a real Postfix next hop: what pipelining gives.
 *
 *   node --import tsx bench/nexthop.ts [--messages N=2000] [--connections C=10] [--size S=4096]
 *        [--recipients R=10] [--rounds K=2]
 *
 * Load (test/harness/load.ts, C connections) → Tandem → Postfix (a private instance,
 * test/harness/postfix.ts) that accepts everything and discards it after queueing it (its
 * smtpd and cleanup do their full work, fsync included). Each message goes to a list of R
 * members at the Postfix domain, so each delivery is one transaction with R RCPT commands.
 * Two modes, alternated K times (the machine's speed drifts; compare within a run):
 *   pipelining   Postfix offers PIPELINING: nodemailer sends the R RCPTs in one write
 *   lockstep     Postfix hides it (smtpd_discard_ehlo_keywords=pipelining): one RCPT per round trip
 * Figure per run: recipients delivered per second from the first message sent until Tandem's
 * tracking log has every delivery; Tandem's CPU per message. Prints a table and one JSON line.
 *
 * Exports nothing (an entry point). What can go wrong: Postfix not installed or not root (exits
 * with the reason); deliveries not complete within the timeout (reported, exit code 1).
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { runLoad } from "../test/harness/load.ts";
import { startNode, writeNodeConfig } from "../test/harness/node.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { writeTables } from "../test/harness/tandem.ts";
import { POSTFIX_AVAILABLE, startPostfix } from "../test/harness/postfix.ts";
import { groupCpuSeconds, machineInfo } from "./procstat.ts";

type Mode = "pipelining" | "lockstep";

interface Row {
  mode: Mode;
  round: number;
  messages: number;
  recipients: number;
  seconds: number;
  rcptsPerSec: number;
  msgsPerSec: number;
  tandemCpuMsPerMsg: number;
  complete: boolean;
}

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

const deliveredCount = (file: string): number => {
  try {
    return readFileSync(file, "utf8").split("\n").filter((l) => l.includes('"event":"delivered"')).length;
  } catch {
    return 0;
  }
};

async function runMode(root: string, mode: Mode, round: number, p: { messages: number; connections: number; size: number; recipients: number }): Promise<Row> {
  const dir = join(root, `${mode}-${round}`);
  const pf = await startPostfix({
    dir: join(dir, "postfix"),
    hostname: "next.bench",
    listeners: { in: [] },
    mainCf: [
      "default_transport=discard:bench",
      "default_destination_concurrency_limit=50",
      ...(mode === "lockstep" ? ["smtpd_discard_ehlo_keywords=pipelining"] : []),
    ],
  });
  const members = Array.from({ length: p.recipients }, (_, i) => `m${i}@example.net`).join(", ");
  const tables = writeTables(dir, {
    local_domains: "bench.test ok\n",
    aliases: `list@bench.test ${members}\n`,
    transport: `example.net smtp:[127.0.0.1]:${pf.listeners.in}\n`,
  });
  const tracking = join(dir, "tracking.log");
  const node = await startNode({ config: writeNodeConfig(dir, { tables, tracking: { path: tracking } }), logFile: join(dir, "tandem.out") });
  try {
    const total = p.messages * p.recipients;
    const cpu0 = groupCpuSeconds(node.proc.pid);
    const t0 = performance.now();
    const load = await runLoad({ host: node.smtp.host, port: node.smtp.port, total: p.messages, concurrency: p.connections, sizeBytes: p.size, from: "bench@example.org", to: "list@bench.test", runId: `${mode}${round}` });
    const deadline = Date.now() + 120_000 + total * 5;
    let complete = true;
    while (deliveredCount(tracking) < load.accepted.size * p.recipients) {
      if (Date.now() > deadline) {
        complete = false;
        log(`${mode}: only ${deliveredCount(tracking)} of ${load.accepted.size * p.recipients} deliveries before the timeout`);
        break;
      }
      await sleep(20);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = groupCpuSeconds(node.proc.pid) - cpu0;
    const delivered = deliveredCount(tracking);
    return {
      mode, round, messages: p.messages, recipients: p.recipients,
      seconds: Math.round(seconds * 100) / 100,
      rcptsPerSec: Math.round(delivered / seconds),
      msgsPerSec: Math.round(delivered / p.recipients / seconds),
      tandemCpuMsPerMsg: Math.round((cpu * 1000 / p.messages) * 100) / 100,
      complete: complete && load.accepted.size === p.messages,
    };
  } finally {
    await node.stop();
    await pf.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "2000" },
      connections: { type: "string", default: "10" },
      size: { type: "string", default: "4096" },
      recipients: { type: "string", default: "10" },
      rounds: { type: "string", default: "2" },
    },
    strict: true,
  });
  const p = { messages: Number(values.messages), connections: Number(values.connections), size: Number(values.size), recipients: Number(values.recipients) };
  const rounds = Number(values.rounds);
  if (POSTFIX_AVAILABLE) throw new Error(POSTFIX_AVAILABLE);
  const machine = machineInfo();
  const procs = trackProcesses();
  const root = mkdtempSync(join("/tmp", "tandem-bench-nexthop-"));
  chmodSync(root, 0o755); // Postfix's daemons (user postfix) must reach their queue inside
  const rows: Row[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const mode of ["pipelining", "lockstep"] as const) {
        log(`${mode} round ${round}: ${p.messages} messages x ${p.recipients} recipients, ${p.connections} connections`);
        rows.push(await runMode(root, mode, round, p));
      }
    }
  } finally {
    await procs.stopAll();
    rmSync(root, { recursive: true, force: true });
  }
  console.log(`\nnext-hop benchmark: Tandem → Postfix, ${p.messages} messages x ${p.size} bytes x ${p.recipients} recipients, ${p.connections} connections`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
  console.log("mode        round  seconds  rcpts/s  msgs/s  tandem CPU ms/msg");
  for (const r of rows) {
    console.log(`${r.mode.padEnd(12)}${String(r.round).padEnd(7)}${String(r.seconds).padEnd(9)}${String(r.rcptsPerSec).padEnd(9)}${String(r.msgsPerSec).padEnd(8)}${r.tandemCpuMsPerMsg}${r.complete ? "" : " (INCOMPLETE)"}`);
  }
  console.log(JSON.stringify({ bench: "nexthop", params: p, machine, results: rows }));
  if (rows.some((r) => !r.complete)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/nexthop: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
