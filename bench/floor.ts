/*
 * floor.ts - what relaying one 4 KiB message costs this machine's kernel, with no MTA in the way:
 * the CPU floor under any relay's "CPU per relayed message" (issue 14's target: 0.8 ms).
 *
 *   node --import tsx bench/floor.ts [--messages N=3000] [--sessions S=20] [--bytes B=4096] [--floor-only]
 *
 * A relay that answers 250 only once the message is on disk does, for each message, at least
 * what these three parts do; each is measured alone, in C programs or synchronous calls that do
 * nothing else:
 *   receive   Postfix's smtp-sink taking the messages from smtp-source, one TCP connection per
 *             message (the greeting, EHLO, MAIL, RCPT, DATA, the data, QUIT): the sink's CPU per
 *             message. It parses next to nothing and writes nothing to disk.
 *   commit    a queue file written and made durable as Tandem does it: open a new file in tmp/,
 *             write the message, fsync, close, rename into a second folder, fsync that folder;
 *             then, for the delivery, unlink it. Synchronous calls on this thread (no thread
 *             pool), CPU of the process per message. Printed also without the folder fsync
 *             (Postfix's way: it fsyncs the file only) and with one folder fsync for 8 messages
 *             (Tandem's group commit under load shares them).
 *   send      smtp-source -d to a second smtp-sink: the client's CPU per message on a connection
 *             kept open (MAIL, RCPT, DATA, the data, each reply read), as a relay's next-hop
 *             client does it.
 * The floor is their sum. Loopback TCP is charged mostly to the writer (the kernel runs the
 * receiver's path in the sender's context), so the three overlap little.
 * Then, in the same run (unless --floor-only), the relays themselves: Tandem (this tree's dist/)
 * and a private Postfix (bench/postfix.ts), each relaying N messages from smtp-source (one
 * connection per message) to a sink of its own, and the CPU of its process group per message,
 * as a multiple of the floor.
 * Prints each part, the floor and the relays in microseconds per message, and a JSON line
 * {"bench":"floor"}.
 * Needs the Debian postfix package (smtp-source, smtp-sink) and root (smtp-sink -u nobody).
 * Figures drift with the machine's load like every other here: compare within a run.
 */
import { spawn } from "node:child_process";
import { chmodSync, closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNode, writeNodeConfig } from "../test/harness/node.ts";
import { formatHostPort, type HostPort } from "../test/harness/ports.ts";
import { trackProcesses } from "../test/harness/procs.ts";
import { groupCpuSeconds, machineInfo, parseStat, ticksPerSecond } from "./procstat.ts";
import { SmtpSink } from "./smtp-sink.ts";
import { postfixAvailability, smtpSourceArgs, startPostfixRelay } from "./postfix.ts";

function log(text: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${text}\n`);
}

/**
 * Runs smtp-source to completion and returns its own CPU seconds (user + system): it runs under
 * a shell that prints its reaped children's times (cutime, cstime of /proc/self/stat) after it.
 */
function smtpSourceCpu(target: HostPort, n: number, sessions: number, bytes: number, reuse: boolean): Promise<number> {
  const args = smtpSourceArgs(target, n, { sessions, bytes, reuse });
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", 'smtp-source "$@" || exit 1; cat /proc/$$/stat', "sh", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout!.on("data", (d) => { out += d; });
    child.stderr!.on("data", (d) => { err += d; });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`smtp-source exited ${code}: ${err.trim().slice(0, 300)}`));
      // the shell's reaped children: smtp-source
      const st = parseStat(child.pid!, out.trim());
      const ticks = st.cutime + st.cstime;
      if (!Number.isFinite(ticks)) return reject(new Error(`cannot read smtp-source's CPU time from "${out.trim()}"`));
      resolve(ticks / ticksPerSecond());
    });
  });
}

/** The commit and the delivery's unlink, n times, synchronously; CPU microseconds per message. */
function commitCpu(dir: string, n: number, bytes: number, folderSyncEvery: number): number {
  const tmp = join(dir, "tmp");
  const incoming = join(dir, "incoming");
  mkdirSync(tmp, { recursive: true });
  mkdirSync(incoming, { recursive: true });
  const data = Buffer.alloc(bytes, "x");
  const folder = openSync(incoming, "r");
  const names: string[] = [];
  const t0 = process.cpuUsage();
  try {
    for (let i = 0; i < n; i++) {
      const name = `m${i}`;
      const fd = openSync(join(tmp, name), "wx", 0o600);
      writeSync(fd, data);
      fsyncSync(fd);
      closeSync(fd);
      renameSync(join(tmp, name), join(incoming, name));
      names.push(name);
      // every `folderSyncEvery` messages (each message with none): their folder fsync, then
      // their delivery, which unlinks them
      if (names.length >= Math.max(1, folderSyncEvery)) {
        if (folderSyncEvery > 0) fsyncSync(folder);
        for (const done of names.splice(0)) unlinkSync(join(incoming, done));
      }
    }
    for (const done of names.splice(0)) unlinkSync(join(incoming, done));
  } finally {
    closeSync(folder);
  }
  const u = process.cpuUsage(t0);
  return (u.user + u.system) / n;
}

/** A relay's CPU per message (its process group), relaying n messages from smtp-source to its sink. */
async function relayCpu(smtp: HostPort, pgid: number, sink: SmtpSink, n: number, sessions: number, bytes: number): Promise<number> {
  const base = sink.count;
  const cpu0 = groupCpuSeconds(pgid);
  await smtpSourceCpu(smtp, n, sessions, bytes, false);
  if (!(await sink.waitFor(base + n, 60_000))) throw new Error(`the relay on ${formatHostPort(smtp)} did not deliver all ${n} messages within 60 s`);
  return ((groupCpuSeconds(pgid) - cpu0) * 1e6) / n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: "string", default: "3000" },
      sessions: { type: "string", default: "20" },
      bytes: { type: "string", default: "4096" },
      "floor-only": { type: "boolean", default: false },
    },
    strict: true,
  });
  const n = Number(values.messages);
  const sessions = Number(values.sessions);
  const bytes = Number(values.bytes);
  const avail = postfixAvailability();
  if (!avail.ok) throw new Error(`Postfix's tools cannot run here: ${avail.reason}`);
  const machine = machineInfo();
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}`);
  const root = mkdtempSync(join(tmpdir(), "tandem-floor-"));
  chmodSync(root, 0o755); // Postfix's daemons (user postfix) must reach their queue inside
  const procs = trackProcesses();
  const sinks: SmtpSink[] = [];
  try {
    const inbound = await SmtpSink.start();
    sinks.push(inbound);
    const outbound = await SmtpSink.start();
    sinks.push(outbound);
    // warm-up of both sinks and the file system's caches
    await smtpSourceCpu(inbound.address, 200, sessions, bytes, false);
    await smtpSourceCpu(outbound.address, 200, sessions, bytes, true);
    commitCpu(join(root, "warm"), 200, bytes, 1);

    const sink0 = groupCpuSeconds(inbound.child.pid!);
    const generator = await smtpSourceCpu(inbound.address, n, sessions, bytes, false);
    if (!(await inbound.waitFor(n + 200, 30_000))) throw new Error("the receiving smtp-sink did not count every message");
    const receive = ((groupCpuSeconds(inbound.child.pid!) - sink0) * 1e6) / n;
    log(`receive: smtp-sink ${Math.round(receive)} us/msg (one connection per message; smtp-source itself ${Math.round((generator * 1e6) / n)} us/msg)`);

    const send = ((await smtpSourceCpu(outbound.address, n, sessions, bytes, true)) * 1e6) / n;
    log(`send: smtp-source -d ${Math.round(send)} us/msg (connections kept open)`);

    const commit = commitCpu(join(root, "each"), n, bytes, 1);
    const commitGrouped = commitCpu(join(root, "grouped"), n, bytes, 8);
    const commitFileOnly = commitCpu(join(root, "file-only"), n, bytes, 0);
    log(`commit + unlink: ${Math.round(commit)} us/msg with a folder fsync each, ${Math.round(commitGrouped)} with one per 8, ${Math.round(commitFileOnly)} with none`);

    const floor = receive + commit + send;
    const floorGrouped = receive + commitGrouped + send;

    const relays: { name: string; cpuUs: number }[] = [];
    if (!values["floor-only"]) {
      const tandemSink = await SmtpSink.start();
      sinks.push(tandemSink);
      const config = writeNodeConfig(join(root, "tandem"), { relay: { host: formatHostPort(tandemSink.address) } });
      const node = await startNode({ config, logFile: join(root, "tandem", "tandem.log") });
      const postfixSink = await SmtpSink.start();
      sinks.push(postfixSink);
      const pf = await startPostfixRelay({ dir: join(root, "postfix"), relayHost: postfixSink.address });
      for (const [name, smtp, pgid, sink] of [["tandem", node.smtp, node.proc.pid, tandemSink], ["postfix", pf.smtp, pf.proc.pid, postfixSink]] as const) {
        await relayCpu(smtp, pgid, sink, 1000, sessions, bytes); // warm-up, as bench/smtp-source.ts
        const cpuUs = await relayCpu(smtp, pgid, sink, n, sessions, bytes);
        relays.push({ name, cpuUs });
        log(`${name}: ${Math.round(cpuUs)} us/msg, ${(cpuUs / floor).toFixed(1)} x the floor`);
      }
    }
    console.log(`\nthe kernel's floor for relaying one ${bytes}-byte message, one connection per message in (${sessions} sessions), a kept connection out`);
    console.log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}\n`);
    console.log(`part                                   CPU us/msg`);
    console.log(`receive (smtp-sink)                    ${Math.round(receive)}`);
    console.log(`commit + unlink (folder fsync each)    ${Math.round(commit)}   (one per 8: ${Math.round(commitGrouped)}, none: ${Math.round(commitFileOnly)})`);
    console.log(`send (smtp-source -d)                  ${Math.round(send)}`);
    console.log(`floor                                  ${Math.round(floor)}   (folder fsyncs grouped by 8: ${Math.round(floorGrouped)})`);
    for (const r of relays) console.log(`${`${r.name} (same run, relaying)`.padEnd(39)}${Math.round(r.cpuUs)}   (${(r.cpuUs / floor).toFixed(1)} x the floor)`);
    console.log(JSON.stringify({ bench: "floor", messages: n, sessions, bytes, machine, receiveUs: Math.round(receive), commitUs: Math.round(commit), commitGroupedUs: Math.round(commitGrouped), commitFileOnlyUs: Math.round(commitFileOnly), sendUs: Math.round(send), floorUs: Math.round(floor), floorGroupedUs: Math.round(floorGrouped), relays: relays.map((r) => ({ name: r.name, cpuUs: Math.round(r.cpuUs), timesFloor: Math.round((r.cpuUs / floor) * 10) / 10 })) }));
  } finally {
    await procs.stopAll();
    for (const s of sinks) s.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/floor: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
